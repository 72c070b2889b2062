#!/usr/bin/env bash
# Builds the dbcert-agent .deb and .rpm packages from a clean clone with only the Go
# toolchain (nfpm is built from the Go module proxy; no dpkg or rpm tools needed).
#
#   bash packaging/build.sh [OUTDIR]                   (default OUTDIR: dist in the source tree;
#                                                       a relative one is relative to the
#                                                       current directory)
#   bash packaging/build.sh image [OUTDIR]             the container image instead
#
# Writes OUTDIR/linux_<arch>/dbcert-agent (static, -trimpath) and
# OUTDIR/dbcert-agent_<version>-1_<arch>.deb and OUTDIR/dbcert-agent-<version>-1.<arch>.rpm.
#
# "image" builds packaging/container/Containerfile with podman (or docker when there is
# no podman): the same binary (plus the timetzdata build tag, as the image has no
# zoneinfo) in OUTDIR/image/, the host's CA bundle, and a passwd entry for uid 65532.
# It tags the image IMAGE and writes its ID to OUTDIR/image.id.
#
# Environment, all optional:
#   VERSION            version of the binary and the packages. Default from git: X.Y.Z
#                      when HEAD is tagged vX.Y.Z; otherwise <last vX.Y.Z tag, or 0.0.0>
#                      +git<commit count>.<short commit>, plus ".dirty" with uncommitted
#                      changes. A tag suffix such as -rc1 becomes ~rc1, so it sorts
#                      before the release in dpkg and rpm.
#   COMMIT             commit printed by "dbcert-agent version" [git rev-parse HEAD]
#   GOARCH             target architecture [go env GOARCH]
#   MAINTAINER         the packages' maintainer field
#   SOURCE_DATE_EPOCH  timestamp of the files in the packages and of the image
#                      [HEAD's commit time]
#   IMAGE              image name and tag [localhost/dbcert-agent:VERSION, with + and ~
#                      turned into - as tags allow neither]
#   CA_BUNDLE          PEM CA bundle put into the image [/etc/ssl/certs/ca-certificates.crt]
#
# Exit status 3: nfpm could not be built (no access to the Go module proxy).
# Exit status 4: "image" found neither podman nor docker.
set -euo pipefail

mode=packages
if [ "${1:-}" = image ]; then
	mode=image
	shift
fi

# Pinned: nfpm v2.46 and later need modules that proxy.golang.org does not serve.
NFPM_MODULE=github.com/goreleaser/nfpm/v2/cmd/nfpm
NFPM_VERSION=v2.45.0

if [ $# -gt 1 ]; then
	echo "usage: bash packaging/build.sh [image] [OUTDIR]" >&2
	exit 2
fi
# A relative OUTDIR is relative to where the script was run from.
out=${1:-}
if [ -n "$out" ]; then
	mkdir -p "$out"
	out=$(cd "$out" && pwd)
fi
cd "$(dirname "$0")/.."
out=${out:-$PWD/dist}
mkdir -p "$out"

in_git() { git rev-parse --verify -q HEAD >/dev/null 2>&1; }

if [ -z "${COMMIT:-}" ]; then
	if in_git; then COMMIT=$(git rev-parse HEAD); else COMMIT=unknown; fi
fi
if [ -z "${VERSION:-}" ]; then
	if in_git; then
		dirty=""
		git diff-index --quiet HEAD -- 2>/dev/null || dirty=.dirty
		short=$(git rev-parse --short=12 HEAD)
		if tag=$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null); then
			base=${tag#v}
			base=${base//-/\~}
			since=$(git rev-list --count "$tag..HEAD")
		else
			base=0.0.0
			since=$(git rev-list --count HEAD)
		fi
		if [ "$since" = 0 ] && [ -z "$dirty" ]; then
			VERSION=$base
		else
			VERSION="$base+git$since.$short$dirty"
		fi
	else
		VERSION=0.0.0+unknown
	fi
fi
if ! [[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "build.sh: VERSION=$VERSION: must start with a digit and use only letters, digits and . + ~ (dpkg and rpm both accept those)" >&2
	exit 2
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && in_git; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD)
fi
[ -n "${SOURCE_DATE_EPOCH:-}" ] && export SOURCE_DATE_EPOCH

goarch=$(go env GOARCH)

# build_binary DEST [GO BUILD FLAGS...]: the static binary, version and commit stamped.
build_binary() {
	local dest=$1
	shift
	echo "==> dbcert-agent $VERSION (commit $COMMIT) for linux/$goarch"
	CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath "$@" \
		-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X github.com/dbcert-agent/dbcert-agent/agent/wire.version=$VERSION" \
		-o "$dest" .
}

if [ "$mode" = image ]; then
	engine=""
	for e in podman docker; do
		if command -v "$e" >/dev/null 2>&1; then
			engine=$e
			break
		fi
	done
	if [ -z "$engine" ]; then
		echo "build.sh: image: neither podman nor docker is installed" >&2
		exit 4
	fi
	ca=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
	if ! [ -s "$ca" ]; then
		echo "build.sh: image: no CA bundle at $ca (install ca-certificates or set CA_BUNDLE)" >&2
		exit 2
	fi
	image=${IMAGE:-localhost/dbcert-agent:${VERSION//[+~]/-}}
	ctx="$out/image"
	rm -rf "$ctx"
	mkdir -p "$ctx"
	build_binary "$ctx/dbcert-agent" -tags timetzdata
	install -m 0644 "$ca" "$ctx/ca-certificates.crt"
	install -m 0644 packaging/container/passwd packaging/container/group "$ctx/"
	chmod 0755 "$ctx/dbcert-agent"
	echo "==> $engine build $image"
	args=(build --file packaging/container/Containerfile --tag "$image" --platform "linux/$goarch"
		--build-arg "VERSION=$VERSION" --build-arg "COMMIT=$COMMIT" --iidfile "$out/image.id")
	if [ "$engine" = podman ] && [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
		args+=(--timestamp "$SOURCE_DATE_EPOCH")
	fi
	"$engine" "${args[@]}" "$ctx"
	echo "==> $image $(cat "$out/image.id")"
	exit 0
fi

bin="$out/linux_$goarch/dbcert-agent"
build_binary "$bin"

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
echo "==> nfpm $NFPM_VERSION"
# Built for the machine running this script, whatever GOOS/GOARCH say.
if ! env -u GOOS -u GOARCH CGO_ENABLED=0 GOBIN="$tools" go install "$NFPM_MODULE@$NFPM_VERSION"; then
	echo "build.sh: could not build nfpm $NFPM_VERSION (is the Go module proxy reachable?)" >&2
	exit 3
fi

for packager in deb rpm; do
	VERSION=$VERSION ARCH=$goarch BINARY=$bin \
		MAINTAINER=${MAINTAINER:-dbcert-agent maintainers} \
		"$tools/nfpm" package --config packaging/nfpm.yaml --packager "$packager" --target "$out/"
done
