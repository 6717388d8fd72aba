"""Map the repository's top-level folders onto the ``linzoo`` namespace.

``vision/`` installs as ``linzoo.vision``, ``kernels/`` as ``linzoo.kernels`` and so on, so nothing
generic like ``kernels`` lands in site-packages. Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("vision", "diffusion", "kernels", "train", "weights", "configs")

packages, package_dir = [], {}
for folder in FOLDERS:
    name = f"linzoo.{folder}"
    packages.append(name)
    package_dir[name] = folder
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"linzoo.configs": ["*.yaml", "*/*.yaml", "*/*/*.yaml"]},
    include_package_data=True,
)
