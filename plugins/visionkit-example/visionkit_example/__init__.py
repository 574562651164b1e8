"""An example visionkit plugin; its parts are registered by ``visionkit_example.parts``."""
