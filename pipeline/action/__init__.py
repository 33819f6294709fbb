"""The VOC Action task: persons, the subset marker, and the three variants of its model.
The top layer."""
