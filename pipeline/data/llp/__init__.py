"""The LLP annotation files, vendored unchanged from the dataset release."""
