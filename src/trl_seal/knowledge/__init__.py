"""Knowledge incorporation: passages → self-edit prompts → training documents → closed-book QA reward."""
