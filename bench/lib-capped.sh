# shellcheck shell=bash
# The start the registry benchmarks share (pack-registry.sh, podman.sh),
# sourced with $here set to bench/: tests/lib.sh for serving and fail,
# which tests/lib-registry.sh uses; bench/lib.sh's scratch, cleanup and
# servers; then the settings of the capped link and of the image:
#   runs     $1, else RUNS, else 3
#   latency  LATENCY_MS (20), rate RATE (100000000 bytes/s per connection)
#   rootfs   ROOTFS, the tree (the torch rootfs of bench/coldstart-remote.sh)
#   image    IMAGE_CACHE, the OCI layout made from it (bench/lib.sh
#            make_oci_image)
# shellcheck disable=SC2154 # here: the script sets it
# shellcheck source=tests/lib.sh
source "$here/../tests/lib.sh"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
# shellcheck source=tests/lib-registry.sh
source "$here/../tests/lib-registry.sh"
# shellcheck disable=SC2034 # read by the scripts
{
	runs=${1:-${RUNS:-3}}
	latency=${LATENCY_MS:-20}
	rate=${RATE:-100000000}
	rootfs=${ROOTFS:-/var/tmp/cfs-bench-rootfs-torch}
	image=${IMAGE_CACHE:-/var/tmp/cfs-bench-oci-pack-registry}
}
