"""Lightning training, data modules and the ``linzoo`` command line."""
