"""Built-in plugins of lshcore (hash families, transforms, backends), registered through the same hooks as third-party ones."""
