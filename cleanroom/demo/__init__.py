"""The end-to-end demo of the clean room."""
