package packaging

import (
	"archive/tar"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// imageUID is the user the image runs as (the distroless "nonroot" uid).
const imageUID = 65532

// TestImage builds the container image with "build.sh image" and podman, and checks
// its configuration and its whole file system (exported from a created, never started
// container: nothing here can start one) down to the binary, which must be static and
// print the build's version when run straight from the exported tree.
func TestImage(t *testing.T) {
	podman := lookPath(t, "podman")
	r, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dist := filepath.Join(workDir, "image-dist")
	image := "localhost/dbcert-agent-test:" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	build := exec.Command("bash", filepath.Join(r, "packaging", "build.sh"), "image", dist)
	build.Env = append(os.Environ(), "VERSION="+testVersion, "COMMIT=", "IMAGE="+image)
	out, err := build.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 4 {
		skipOrFail(t, "build.sh image: %s", out)
	}
	if err != nil {
		t.Fatalf("build.sh image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(podman, "rmi", "--force", image).Run() })
	commit := "unknown"
	git := exec.Command("git", "rev-parse", "--verify", "-q", "HEAD")
	git.Dir = r
	if out, err := git.Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	id, err := os.ReadFile(filepath.Join(dist, "image.id"))
	if err != nil || len(strings.TrimSpace(string(id))) == 0 {
		t.Fatalf("build.sh image wrote no image.id: %v", err)
	}

	t.Run("config", func(t *testing.T) {
		var inspect []struct {
			ID           string `json:"Id"`
			Architecture string
			Os           string
			Config       struct {
				User       string
				Entrypoint []string
				Cmd        []string
				Env        []string
				Labels     map[string]string
				WorkingDir string
			}
		}
		if err := json.Unmarshal([]byte(run(t, exec.Command(podman, "image", "inspect", image))), &inspect); err != nil || len(inspect) != 1 {
			t.Fatalf("podman image inspect: %v (%d images)", err, len(inspect))
		}
		got := inspect[0]
		if !strings.HasSuffix(strings.TrimSpace(string(id)), got.ID) {
			t.Errorf("image.id %q is not the image's ID %q", id, got.ID)
		}
		if got.Os != "linux" || got.Architecture != runtime.GOARCH {
			t.Errorf("platform %s/%s, want linux/%s", got.Os, got.Architecture, runtime.GOARCH)
		}
		if want := strconv.Itoa(imageUID) + ":" + strconv.Itoa(imageUID); got.Config.User != want {
			t.Errorf("User %q, want %q (numeric, so runAsNonRoot can check it)", got.Config.User, want)
		}
		if strings.Join(got.Config.Entrypoint, " ") != "/dbcert-agent" || strings.Join(got.Config.Cmd, " ") != "run" {
			t.Errorf("Entrypoint %q Cmd %q, want [/dbcert-agent] [run]", got.Config.Entrypoint, got.Config.Cmd)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.title":    "dbcert-agent",
			"org.opencontainers.image.source":   "https://github.com/dbcert-agent/dbcert-agent",
			"org.opencontainers.image.licenses": "Apache-2.0",
			"org.opencontainers.image.version":  testVersion,
			"org.opencontainers.image.revision": commit,
		} {
			if got.Config.Labels[k] != want {
				t.Errorf("label %s = %q, want %q", k, got.Config.Labels[k], want)
			}
		}
		if got.Config.Labels["org.opencontainers.image.description"] == "" {
			t.Error("label org.opencontainers.image.description is empty")
		}
	})

	t.Run("filesystem", func(t *testing.T) {
		ctr := strings.TrimSpace(run(t, exec.Command(podman, "create", image)))
		defer exec.Command(podman, "rm", "--force", ctr).Run()
		export := exec.Command(podman, "export", ctr)
		stdout, err := export.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := export.Start(); err != nil {
			t.Fatal(err)
		}
		root := t.TempDir()
		entries := untar(t, stdout, root)
		if err := export.Wait(); err != nil {
			t.Fatalf("podman export: %v", err)
		}
		// Everything in the image, with mode and owner: no shell, no package database,
		// no writable directory.
		want := []string{
			"dbcert-agent -rwxr-xr-x 0:0",
			"etc/ drwxr-xr-x 0:0",
			"etc/group -rw-r--r-- 0:0",
			"etc/passwd -rw-r--r-- 0:0",
			"etc/ssl/ drwxr-xr-x 0:0",
			"etc/ssl/certs/ drwxr-xr-x 0:0",
			"etc/ssl/certs/ca-certificates.crt -rw-r--r-- 0:0",
		}
		if strings.Join(entries, "\n") != strings.Join(want, "\n") {
			t.Errorf("image files:\n\t%s\nwant:\n\t%s", strings.Join(entries, "\n\t"), strings.Join(want, "\n\t"))
		}
		passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if !regexp.MustCompile(`(?m)^dbcert-agent:x:65532:65532:[^:]*:[^:]*:/sbin/nologin$`).Match(passwd) {
			t.Errorf("etc/passwd has no dbcert-agent user with uid 65532:\n%s", passwd)
		}
		if ca, _ := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")); !strings.Contains(string(ca), "-----BEGIN CERTIFICATE-----") {
			t.Error("etc/ssl/certs/ca-certificates.crt holds no PEM certificate")
		}

		bin := filepath.Join(root, "dbcert-agent")
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("the binary is dynamically linked (%v); it must be static for a scratch image", p.Type)
			}
		}
		f.Close()
		version := run(t, exec.Command(bin, "version"))
		wantVersion := regexp.MustCompile(`^dbcert-agent ` + regexp.QuoteMeta(testVersion) + ` \(commit ` + regexp.QuoteMeta(commit) +
			`, go1\.\d+[^,]*, linux/` + runtime.GOARCH + `\)\n$`)
		if !wantVersion.MatchString(version) {
			t.Errorf("version printed %q, want %s", version, wantVersion)
		}
	})
}

// untar extracts a tar stream into root and returns its entries as sorted
// "name mode uid:gid" lines (directories with a trailing slash).
func untar(t *testing.T, r io.Reader, root string) []string {
	t.Helper()
	var entries []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(filepath.Clean("/"+h.Name), "/")
		if h.Typeflag == tar.TypeDir {
			name += "/"
		}
		entries = append(entries, name+" "+h.FileInfo().Mode().String()+" "+strconv.Itoa(h.Uid)+":"+strconv.Itoa(h.Gid))
		dst := filepath.Join(root, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, os.FileMode(h.Mode).Perm())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	sort.Strings(entries)
	return entries
}
