"""What every maas service shares: settings, server lifecycle, errors, tensors."""
