"""Code generated from protos/cleanroom/v1 by `make proto`. Do not edit."""
