"""`exapt fit --strategy auto`: rank cheap candidates, fine-tune the promising few, choose on validation."""
