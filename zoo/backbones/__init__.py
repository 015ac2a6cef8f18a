"""One module per backbone; each registers itself with :func:`zoo.registry.register_backbone`."""
