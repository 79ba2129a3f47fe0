from ..registry import Registry

GENERATORS = Registry("generator")
DISCRIMINATORS = Registry("discriminator")
