"""Outer-loop strategies: how a round's rewards become a policy update."""
