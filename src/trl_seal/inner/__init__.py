"""Inner adapters: apply a self-edit to a resident copy of the policy, then restore it exactly."""
