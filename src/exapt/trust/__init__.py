"""Trust a transfer: a membership-inference audit and adversarial attacks on a run (docs/trust.md)."""
