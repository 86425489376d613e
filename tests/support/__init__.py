"""Test-support code that runs outside streamscore: a real MLServer serving the sample models."""
