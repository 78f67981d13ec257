"""Built-in channel plugins, each registered through the channelhub entry-point group."""
