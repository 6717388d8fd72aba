"""Map the repository's top-level folders onto the ``linzoo`` namespace.

``vision/`` installs as ``linzoo.vision``, ``kernels/`` as ``linzoo.kernels`` and so on, so nothing
generic like ``kernels`` lands in site-packages. Everything else lives in pyproject.toml.
"""

from setuptools import find_namespace_packages, find_packages, setup

FOLDERS = ("vision", "diffusion", "kernels", "train", "weights", "configs")

packages, package_dir = [], {}
for folder in FOLDERS:
    name = f"linzoo.{folder}"
    packages.append(name)
    package_dir[name] = folder
    # configs/ sub-folders hold only YAML: list them as (namespace) packages so their data is installed
    finder = find_namespace_packages if folder == "configs" else find_packages
    packages += [f"{name}.{sub}" for sub in finder(folder) if "__pycache__" not in sub]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"": ["*.yaml"]},
    include_package_data=True,
)
