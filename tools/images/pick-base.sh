#!/usr/bin/env bash
# Print the base image to build maas on: PYTHON_IMAGE when it is here or can be pulled,
# else LOCAL_IMAGE, made by base-image.sh (debootstrap) when it is not here yet.
#   tools/images/pick-base.sh PYTHON_IMAGE LOCAL_IMAGE
# Messages go to stderr; stdout is the image name only.
set -euo pipefail
python_image=${1:?usage: pick-base.sh PYTHON_IMAGE LOCAL_IMAGE}
local_image=${2:?usage: pick-base.sh PYTHON_IMAGE LOCAL_IMAGE}
docker=${DOCKER:-docker}
here() { "$docker" image inspect "$1" >/dev/null 2>&1; }
if here "$python_image" || timeout 120 "$docker" pull -q "$python_image" >/dev/null 2>&1; then
    echo "$python_image"
elif here "$local_image"; then
    echo "images: $python_image cannot be pulled; building on $local_image (made here)" >&2
    echo "$local_image"
else
    echo "images: $python_image cannot be pulled; making $local_image with debootstrap" >&2
    "$(dirname "$0")/base-image.sh" "$local_image" >&2
    echo "$local_image"
fi
