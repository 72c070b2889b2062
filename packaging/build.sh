#!/usr/bin/env bash
# Builds the dbcert-agent .deb and .rpm packages from a clean clone with only the Go
# toolchain (nfpm is built from the Go module proxy; no dpkg or rpm tools needed).
#
#   bash packaging/build.sh [OUTDIR]                   (default OUTDIR: dist)
#
# Writes OUTDIR/linux_<arch>/dbcert-agent (static, -trimpath) and
# OUTDIR/dbcert-agent_<version>-1_<arch>.deb and OUTDIR/dbcert-agent-<version>-1.<arch>.rpm.
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
#   SOURCE_DATE_EPOCH  timestamp of the files in the packages [HEAD's commit time]
#
# Exit status 3: nfpm could not be built (no access to the Go module proxy).
set -euo pipefail

# Pinned: nfpm v2.46 and later need modules that proxy.golang.org does not serve.
NFPM_MODULE=github.com/goreleaser/nfpm/v2/cmd/nfpm
NFPM_VERSION=v2.45.0

cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)

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
bin="$out/linux_$goarch/dbcert-agent"
echo "==> dbcert-agent $VERSION (commit $COMMIT) for linux/$goarch"
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath \
	-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT" \
	-o "$bin" .

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
