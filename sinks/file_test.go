package sinks

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

func TestNewFileValidation(t *testing.T) {
	abs := filepath.Join(t.TempDir(), "never-created")
	tests := []struct {
		name    string
		opts    FileOptions
		wantErr string
		want    string // String() on success
	}{
		{name: "defaults", opts: FileOptions{Dir: abs, UID: -1, GID: -1}, want: "file sink " + abs + " (pem)"},
		{name: "libpq", opts: FileOptions{Dir: abs + "/", Layout: "libpq", UID: -1, GID: -1}, want: "file sink " + abs + " (libpq)"},
		{name: "key mode 0640", opts: FileOptions{Dir: abs, KeyMode: 0o640, UID: -1, GID: -1}, want: "file sink " + abs + " (pem)"},
		{name: "owner ids", opts: FileOptions{Dir: abs, UID: 65534, GID: 65534}, want: "file sink " + abs + " (pem)"},
		{name: "empty dir", opts: FileOptions{UID: -1, GID: -1}, wantErr: "dir is required"},
		{name: "relative dir", opts: FileOptions{Dir: "certs", UID: -1, GID: -1}, wantErr: "not an absolute path"},
		{name: "root dir", opts: FileOptions{Dir: "/", UID: -1, GID: -1}, wantErr: "root directory"},
		{name: "unknown layout", opts: FileOptions{Dir: abs, Layout: "jks", UID: -1, GID: -1}, wantErr: `unknown layout "jks"`},
		{name: "world readable key", opts: FileOptions{Dir: abs, KeyMode: 0o644, UID: -1, GID: -1}, wantErr: "world access"},
		{name: "world writable key", opts: FileOptions{Dir: abs, KeyMode: 0o602, UID: -1, GID: -1}, wantErr: "world access"},
		{name: "setuid key", opts: FileOptions{Dir: abs, KeyMode: 0o600 | os.ModeSetuid, UID: -1, GID: -1}, wantErr: "only permission bits"},
		{name: "bad uid", opts: FileOptions{Dir: abs, UID: -2, GID: -1}, wantErr: "must be -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewFile(tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewFile error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewFile: %v", err)
			}
			if got := f.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if f.Dir() != abs {
				t.Errorf("Dir() = %q, want %q", f.Dir(), abs)
			}
			if exists(t, abs) {
				t.Errorf("NewFile created %s", abs)
			}
		})
	}
}

func TestLayouts(t *testing.T) {
	ca := newCA(t, "layout CA")
	tests := []struct {
		name             string
		layout           string
		keyMode, wantKey os.FileMode
		rsa              bool
		cert, key, caf   string
		pk8              string
	}{
		{name: "pem default", layout: "", wantKey: 0o600, cert: "cert.pem", key: "key.pem", caf: "ca.pem", pk8: "key.pk8"},
		{name: "pem rsa", layout: "pem", wantKey: 0o600, rsa: true, cert: "cert.pem", key: "key.pem", caf: "ca.pem", pk8: "key.pk8"},
		{name: "libpq 0640", layout: "libpq", keyMode: 0o640, wantKey: 0o640, cert: "postgresql.crt", key: "postgresql.key", caf: "root.crt", pk8: "postgresql.pk8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sinkDir(t)
			f := newSink(t, FileOptions{Dir: dir, Layout: tt.layout, KeyMode: tt.keyMode, UID: -1, GID: -1})
			b := ca.ecBundle(t)
			if tt.rsa {
				b = ca.rsaBundle(t)
			}
			mustWrite(t, f, b, true)
			mustCurrent(t, f, b)

			want := Paths{Cert: filepath.Join(dir, tt.cert), Key: filepath.Join(dir, tt.key), CA: filepath.Join(dir, tt.caf),
				KeyDER: filepath.Join(dir, tt.pk8)}
			if got := f.Paths(); got.Cert != want.Cert || got.Key != want.Key || got.CA != want.CA || got.KeyDER != want.KeyDER {
				t.Errorf("Paths() = %+v, want %+v", f.Paths(), want)
			}
			if got, wantNames := f.Names(b), []string{tt.key, tt.pk8, tt.cert, tt.caf}; !slices.Equal(got, wantNames) {
				t.Errorf("Names = %q, want %q", got, wantNames)
			}
			for _, n := range []string{tt.cert, tt.key, tt.pk8, tt.caf} {
				target, err := os.Readlink(filepath.Join(dir, n))
				if err != nil {
					t.Fatalf("visible name %s is not a symlink: %v", n, err)
				}
				if target != "..data/"+n {
					t.Errorf("%s -> %q, want relative ..data/%s", n, target, n)
				}
			}
			if gen := dataTarget(t, dir); !isGeneration(gen) {
				t.Errorf("..data -> %q, want a relative generation name", gen)
			}
			if m := fileMode(t, filepath.Join(dir, dataTarget(t, dir))); m != 0o755 {
				t.Errorf("generation dir mode %v, want 0755", m)
			}
			keyPEM, err := os.ReadFile(want.Key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----\n")) {
				t.Errorf("key file is not PKCS#8 PEM: %.40q", keyPEM)
			}
			certPEM, _ := os.ReadFile(want.Cert)
			if !bytes.Equal(certPEM, b.ChainPEM()) {
				t.Errorf("cert file differs from ChainPEM")
			}
			caPEM, _ := os.ReadFile(want.CA)
			if !bytes.Equal(caPEM, b.CAPEM()) {
				t.Errorf("CA file differs from CAPEM")
			}
			// The DER key: the same key, PKCS#8 DER, key mode, same generation.
			der, err := os.ReadFile(want.KeyDER)
			if err != nil {
				t.Fatal(err)
			}
			k, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				t.Fatalf("%s is not PKCS#8 DER: %v", tt.pk8, err)
			}
			if !bundle.PublicKeysEqual(k.(crypto.Signer).Public(), b.Key.Public()) {
				t.Errorf("%s holds another key than %s", tt.pk8, tt.key)
			}
			if m := fileMode(t, want.KeyDER); m != tt.wantKey {
				t.Errorf("%s mode %04o, want %04o", tt.pk8, m, tt.wantKey)
			}
			checkModes(t, f, tt.wantKey)
		})
	}
}

// checkModes asserts exact modes on the visible files: key wantKey, cert and CA 0644.
func checkModes(t *testing.T, f *File, wantKey os.FileMode) {
	t.Helper()
	p := f.Paths()
	for path, want := range map[string]os.FileMode{p.Key: wantKey, p.Cert: 0o644, p.CA: 0o644} {
		if got := fileMode(t, path); got != want {
			t.Errorf("%s mode %04o, want %04o", path, got, want)
		}
	}
}

func TestModesReappliedEveryWrite(t *testing.T) {
	ca := newCA(t, "modes CA")
	drift := func(t *testing.T, f *File, mode os.FileMode) {
		t.Helper()
		p := f.Paths()
		for _, path := range []string{p.Key, p.Cert, p.CA} {
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("new bundle", func(t *testing.T) {
		f := newSink(t, FileOptions{Dir: sinkDir(t), KeyMode: 0o640, UID: -1, GID: -1})
		mustWrite(t, f, ca.ecBundle(t), true)
		drift(t, f, 0o666)
		mustWrite(t, f, ca.ecBundle(t), true)
		checkModes(t, f, 0o640)
	})
	t.Run("unchanged bundle", func(t *testing.T) {
		f := newSink(t, opts(sinkDir(t)))
		b := ca.ecBundle(t)
		mustWrite(t, f, b, true)
		drift(t, f, 0o666|os.ModeSetgid)
		mustWrite(t, f, b, false)
		checkModes(t, f, 0o600)
	})
	t.Run("umask ignored", func(t *testing.T) {
		old := syscall.Umask(0o077)
		defer syscall.Umask(old)
		dir := sinkDir(t)
		f := newSink(t, opts(dir))
		mustWrite(t, f, ca.ecBundle(t), true)
		checkModes(t, f, 0o600)
		if m := fileMode(t, dir); m != 0o755 {
			t.Errorf("created sink dir mode %04o, want 0755", m)
		}
		if m := fileMode(t, filepath.Join(dir, dataLink)); m != 0o755 {
			t.Errorf("generation dir mode %04o, want 0755", m)
		}
	})
	t.Run("owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown to another user needs root")
		}
		const nobody = 65534
		f := newSink(t, FileOptions{Dir: sinkDir(t), UID: nobody, GID: nobody})
		b := ca.ecBundle(t)
		mustWrite(t, f, b, true)
		checkOwner(t, f, nobody, nobody)
		p := f.Paths()
		for _, path := range []string{p.Key, p.Cert, p.CA} {
			if err := os.Chown(path, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
		mustWrite(t, f, b, false)
		checkOwner(t, f, nobody, nobody)
		mustWrite(t, f, ca.ecBundle(t), true)
		checkOwner(t, f, nobody, nobody)
		checkModes(t, f, 0o600)
	})
}

// TestPreviousGenerationFollowsTheConfig: the previous generation stays readable until
// the next rotation and holds a key whose certificate is usually still valid, so a key
// mode or owner narrowed in the config reaches it too — on a rotation and on a write
// that changes nothing.
func TestPreviousGenerationFollowsTheConfig(t *testing.T) {
	ca := newCA(t, "previous generation CA")
	prevModes := func(t *testing.T, dir, prev string, uid, gid int) {
		t.Helper()
		for name, want := range map[string]os.FileMode{"key.pem": 0o600, "key.pk8": 0o600, "cert.pem": 0o644, "ca.pem": 0o644, metaName: metaMode} {
			path := filepath.Join(dir, prev, name)
			if m := fileMode(t, path); m != want {
				t.Errorf("%s (previous generation) has mode %v, want %v", path, m, want)
			}
			if uid < 0 {
				continue
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || int(st.Gid) != gid {
				t.Errorf("%s (previous generation) owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
			}
		}
	}
	for _, rotate := range []bool{true, false} {
		t.Run(map[bool]string{true: "rotation", false: "unchanged bundle"}[rotate], func(t *testing.T) {
			dir := sinkDir(t)
			wide := newSink(t, FileOptions{Dir: dir, KeyMode: 0o640, UID: -1, GID: -1})
			b1, b2 := ca.ecBundle(t), ca.ecBundle(t)
			mustWrite(t, wide, b1, true)
			prev := dataTarget(t, dir)
			narrow := newSink(t, FileOptions{Dir: dir, UID: -1, GID: -1}) // key 0600
			if !rotate {
				mustWrite(t, wide, b2, true) // b1's generation is the previous one now
				mustWrite(t, narrow, b2, false)
			} else {
				mustWrite(t, narrow, b2, true)
			}
			if !slices.Contains(generations(t, dir), prev) {
				t.Fatalf("previous generation %s was pruned", prev)
			}
			prevModes(t, dir, prev, -1, -1)
		})
	}
	t.Run("owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown to another user needs root")
		}
		const nobody = 65534
		dir := sinkDir(t)
		mustWrite(t, newSink(t, FileOptions{Dir: dir, KeyMode: 0o640, UID: nobody, GID: nobody}), ca.ecBundle(t), true)
		prev := dataTarget(t, dir)
		mustWrite(t, newSink(t, FileOptions{Dir: dir, UID: 0, GID: 0}), ca.ecBundle(t), true)
		prevModes(t, dir, prev, 0, 0)
	})
}

// TestPreviousGenerationAfterTheClockSteppedBack: generation names are wall-clock
// times; after the clock steps back, the generation a rotation replaced sorts after the
// current one. A write that changes nothing must still keep it (the previous generation
// stays readable until the next rotation), not prune it as a crashed write's leftover.
func TestPreviousGenerationAfterTheClockSteppedBack(t *testing.T) {
	ca := newCA(t, "clock step CA")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	mustWrite(t, f, ca.ecBundle(t), true)
	// Make the first generation look written an hour ahead of the clock.
	early := dataTarget(t, dir)
	later := ".." + time.Now().Add(time.Hour).UTC().Format(genTimeLayout) + ".00000000"
	if !isGeneration(later) {
		t.Fatalf("test setup: %q is not a generation name", later)
	}
	if err := os.Rename(filepath.Join(dir, early), filepath.Join(dir, later)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, dataLink)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(later, filepath.Join(dir, dataLink)); err != nil {
		t.Fatal(err)
	}
	b := ca.ecBundle(t)
	mustWrite(t, f, b, true) // the rotation: its generation sorts before the one it replaced
	if cur := dataTarget(t, dir); cur > later {
		t.Fatalf("test setup: the new generation %s sorts after %s", cur, later)
	}
	mustWrite(t, f, b, false)
	if !slices.Contains(generations(t, dir), later) {
		t.Errorf("the previous generation %s was pruned by a write that changed nothing: %v", later, generations(t, dir))
	}
}

// checkOwner asserts uid and gid of the visible files.
func checkOwner(t *testing.T, f *File, uid, gid uint32) {
	t.Helper()
	p := f.Paths()
	for _, path := range []string{p.Key, p.Cert, p.CA} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
		}
	}
}

func TestGenerations(t *testing.T) {
	ca := newCA(t, "generations CA")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	b1, b2 := ca.ecBundle(t), ca.ecBundle(t)

	mustWrite(t, f, b1, true)
	gen1 := dataTarget(t, dir)
	mustWrite(t, f, b1, false)
	if got := generations(t, dir); len(got) != 1 || got[0] != gen1 || dataTarget(t, dir) != gen1 {
		t.Fatalf("unchanged write made a new generation: %v", got)
	}

	mustWrite(t, f, b2, true)
	gen2 := dataTarget(t, dir)
	if got := generations(t, dir); len(got) != 2 || got[0] != gen1 || got[1] != gen2 {
		t.Fatalf("after one rotation generations = %v, want [%s %s]", got, gen1, gen2)
	}
	prevCert, err := os.ReadFile(filepath.Join(dir, gen1, "cert.pem"))
	if err != nil {
		t.Fatalf("previous generation not readable: %v", err)
	}
	if !bytes.Equal(prevCert, b1.ChainPEM()) {
		t.Fatalf("previous generation does not hold the previous bundle")
	}

	var prev string
	for i := range 10 {
		prev = dataTarget(t, dir)
		mustWrite(t, f, ca.ecBundle(t), true)
		if got := generations(t, dir); len(got) > 2 {
			t.Fatalf("after rotation %d: %d generation dirs: %v", i+1, len(got), got)
		}
	}
	if got := generations(t, dir); len(got) != 2 || got[0] != prev {
		t.Fatalf("after 10 rotations generations = %v, want the previous %s kept", got, prev)
	}
}

func TestRefusals(t *testing.T) {
	ca := newCA(t, "refusal CA")
	const userData = "user's own file\n"
	tests := []struct {
		name     string
		prewrite bool // a valid generation exists before the tampering
		// setup tampers; root is a temp dir holding sink ("sink") and outside ("outside").
		setup   func(t *testing.T, sink, outside string) (dir string)
		wantErr string
	}{
		{
			name: "dir is a symlink",
			setup: func(t *testing.T, sink, outside string) string {
				link := sink + "-link"
				must(t, os.Symlink(outside, link))
				return link
			},
			wantErr: "sink-link: the sink directory is a symlink",
		},
		{
			name: "cert is a user file",
			setup: func(t *testing.T, sink, _ string) string {
				must(t, os.MkdirAll(sink, 0o755))
				must(t, os.WriteFile(filepath.Join(sink, "cert.pem"), []byte(userData), 0o644))
				return sink
			},
			wantErr: "sink/cert.pem: it exists and is not the agent's symlink",
		},
		{
			name:     "cert replaced by a user file after a write",
			prewrite: true,
			setup: func(t *testing.T, sink, _ string) string {
				must(t, os.Remove(filepath.Join(sink, "cert.pem")))
				must(t, os.WriteFile(filepath.Join(sink, "cert.pem"), []byte(userData), 0o644))
				return sink
			},
			wantErr: "sink/cert.pem: it exists",
		},
		{
			name: "key is a symlink elsewhere",
			setup: func(t *testing.T, sink, outside string) string {
				must(t, os.MkdirAll(sink, 0o755))
				must(t, os.Symlink(filepath.Join(outside, "elsewhere"), filepath.Join(sink, "key.pem")))
				return sink
			},
			wantErr: "sink/key.pem: it exists",
		},
		{
			name:     "key link retargeted after a write",
			prewrite: true,
			setup: func(t *testing.T, sink, outside string) string {
				must(t, os.Remove(filepath.Join(sink, "key.pem")))
				must(t, os.Symlink(filepath.Join(outside, "user.txt"), filepath.Join(sink, "key.pem")))
				return sink
			},
			wantErr: "sink/key.pem: it exists",
		},
		{
			name: "..data points outside (relative)",
			setup: func(t *testing.T, sink, _ string) string {
				must(t, os.MkdirAll(sink, 0o755))
				must(t, os.Symlink("../outside", filepath.Join(sink, "..data")))
				return sink
			},
			wantErr: `sink/..data: it points to "../outside"`,
		},
		{
			name:     "..data points outside (absolute)",
			prewrite: true,
			setup: func(t *testing.T, sink, outside string) string {
				must(t, os.Remove(filepath.Join(sink, "..data")))
				must(t, os.Symlink(outside, filepath.Join(sink, "..data")))
				return sink
			},
			wantErr: "sink/..data: it points to",
		},
		{
			name: "..data points to a generation-named symlink",
			setup: func(t *testing.T, sink, outside string) string {
				must(t, os.MkdirAll(sink, 0o755))
				gen := "..2020_01_01_00_00_00.000000000.0badc0de"
				must(t, os.Symlink(outside, filepath.Join(sink, gen)))
				must(t, os.Symlink(gen, filepath.Join(sink, "..data")))
				return sink
			},
			wantErr: "is not a directory",
		},
		{
			name: "..data is a directory",
			setup: func(t *testing.T, sink, _ string) string {
				must(t, os.MkdirAll(filepath.Join(sink, "..data"), 0o755))
				return sink
			},
			wantErr: "sink/..data: it is not a symlink",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			sink, outside := filepath.Join(root, "sink"), filepath.Join(root, "outside")
			must(t, os.MkdirAll(outside, 0o755))
			must(t, os.WriteFile(filepath.Join(outside, "user.txt"), []byte(userData), 0o644))
			b := ca.ecBundle(t)
			if tt.prewrite {
				mustWrite(t, newSink(t, opts(sink)), b, true)
			}
			dir := tt.setup(t, sink, outside)
			before := snapshot(t, root)

			f := newSink(t, opts(dir))
			changed, err := f.Write(t.Context(), ca.ecBundle(t))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Write error = %v, want it to contain %q", err, tt.wantErr)
			}
			if changed {
				t.Errorf("refused Write reported changed")
			}
			if _, err := f.Current(); err == nil {
				t.Errorf("Current succeeded on a tampered directory")
			}
			after := snapshot(t, root)
			delete(before, filepath.Join(sink, lockName)) // the lock file may be created
			delete(after, filepath.Join(sink, lockName))
			if d := snapshotDiff(before, after); d != "" {
				t.Errorf("refused Write changed the file system:\n%s", d)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailureLeavesPreviousFiles(t *testing.T) {
	ca := newCA(t, "failure CA")
	errInjected := errors.New("injected failure (e.g. ENOSPC)")
	tests := []struct {
		name    string
		hook    func(cancel context.CancelFunc) func(string) error
		cancel  bool // cancel the context before Write
		wantErr error
	}{
		{name: "fail writing key", hook: failAt("writing key.pem", errInjected), wantErr: errInjected},
		{name: "fail writing cert", hook: failAt("writing cert.pem", errInjected), wantErr: errInjected},
		{name: "fail writing CA", hook: failAt("writing ca.pem", errInjected), wantErr: errInjected},
		{name: "fail before commit", hook: failAt("commit", errInjected), wantErr: errInjected},
		{name: "context cancelled before", cancel: true, wantErr: context.Canceled},
		{name: "context cancelled mid-write", hook: cancelAt("writing cert.pem"), wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sinkDir(t)
			f := newSink(t, opts(dir))
			old := ca.ecBundle(t)
			mustWrite(t, f, old, true)
			mustWrite(t, f, ca.ecBundle(t), true)
			mustWrite(t, f, old, true) // two generations, old is current
			before := snapshot(t, dir)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.hook != nil {
				f.hook = tt.hook(cancel)
			}
			if tt.cancel {
				cancel()
			}
			changed, err := f.Write(ctx, ca.ecBundle(t))
			if !errors.Is(err, tt.wantErr) || changed {
				t.Fatalf("Write = %v, %v; want false, %v", changed, err, tt.wantErr)
			}
			f.hook = nil
			mustCurrent(t, f, old)
			after := snapshot(t, dir)
			delete(before, filepath.Join(dir, lockName))
			delete(after, filepath.Join(dir, lockName))
			if d := snapshotDiff(before, after); d != "" {
				t.Errorf("failed Write left changes:\n%s", d)
			}
		})
	}
}

// TestCommitThatReportsAnErrorButHappened: a rename of ..data_tmp over ..data can take
// effect and still report an error (NFS answering a retransmitted request with ENOENT,
// an interrupted FUSE call). The write must then count as committed: removing the new
// generation would leave ..data dangling and every visible name broken.
func TestCommitThatReportsAnErrorButHappened(t *testing.T) {
	ca := newCA(t, "ambiguous commit CA")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	mustWrite(t, f, ca.ecBundle(t), true)
	b := ca.ecBundle(t)
	f.hook = failAt("renamed", syscall.ENOENT)(nil)
	changed, err := f.Write(t.Context(), b)
	f.hook = nil
	if err != nil || !changed {
		t.Fatalf("Write = %v, %v; want true, nil (the rename took effect)", changed, err)
	}
	mustCurrent(t, f, b)
	if _, err := os.ReadFile(filepath.Join(dir, "cert.pem")); err != nil {
		t.Errorf("visible certificate unreadable after the commit: %v", err)
	}
	if exists(t, filepath.Join(dir, dataTmpLink)) {
		t.Errorf("%s left behind", dataTmpLink)
	}
}

// TestUncertainCommitKeepsTheNewGeneration: when the commit rename reports an error and
// ..data, read back, still names the old generation, the new one may yet be current (an
// NFS client can answer from its cache), so it is kept rather than removed; the Write
// fails, the old files stay, and the next Write prunes it.
func TestUncertainCommitKeepsTheNewGeneration(t *testing.T) {
	ca := newCA(t, "uncertain commit CA")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	old := ca.ecBundle(t)
	mustWrite(t, f, old, true)
	oldGen := dataTarget(t, dir)
	var newGen string
	f.hook = func(step string) error {
		if step != "renamed" {
			return nil
		}
		// What a stale lookup would show: ..data still naming the old generation.
		newGen = dataTarget(t, dir)
		tmp := filepath.Join(dir, "..data_stale")
		if err := os.Symlink(oldGen, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
			return err
		}
		return syscall.EIO
	}
	if changed, err := f.Write(t.Context(), ca.ecBundle(t)); err == nil || changed {
		t.Fatalf("Write = %v, %v; want false and an error", changed, err)
	}
	f.hook = nil
	mustCurrent(t, f, old)
	if newGen == "" || !slices.Contains(generations(t, dir), newGen) {
		t.Fatalf("the new generation %q was removed after an uncertain commit: %v", newGen, generations(t, dir))
	}
	mustWrite(t, f, ca.ecBundle(t), true)
	if slices.Contains(generations(t, dir), newGen) {
		t.Errorf("the orphaned generation %s outlived the next Write", newGen)
	}
}

// failAt returns a hook factory that fails at step with err.
func failAt(step string, err error) func(context.CancelFunc) func(string) error {
	return func(context.CancelFunc) func(string) error {
		return func(s string) error {
			if s == step {
				return err
			}
			return nil
		}
	}
}

// cancelAt returns a hook factory that cancels the write's context at step.
func cancelAt(step string) func(context.CancelFunc) func(string) error {
	return func(cancel context.CancelFunc) func(string) error {
		return func(s string) error {
			if s == step {
				cancel()
			}
			return nil
		}
	}
}

func TestCrashRepair(t *testing.T) {
	ca := newCA(t, "crash CA")
	t.Run("crash between commit and links", func(t *testing.T) {
		dir := sinkDir(t)
		f := newSink(t, opts(dir))
		b := ca.ecBundle(t)
		f.hook = failAt("links", errors.New("crash"))(nil)
		changed, err := f.Write(t.Context(), b)
		if err == nil || !changed {
			t.Fatalf("Write = %v, %v; want committed with an error", changed, err)
		}
		if exists(t, f.Paths().Cert) {
			t.Fatalf("visible link exists although the write crashed before creating it")
		}
		if _, err := f.Current(); !errors.Is(err, bundle.ErrInvalid) {
			t.Fatalf("Current with missing links = %v, want ErrInvalid", err)
		}
		f.hook = nil
		mustWrite(t, f, b, false)
		mustCurrent(t, f, b)
	})
	t.Run("links deleted", func(t *testing.T) {
		f := newSink(t, FileOptions{Dir: sinkDir(t), Layout: "libpq", UID: -1, GID: -1})
		b := ca.ecBundle(t)
		mustWrite(t, f, b, true)
		p := f.Paths()
		must(t, os.Remove(p.Cert))
		must(t, os.Remove(p.Key))
		mustWrite(t, f, b, false)
		mustCurrent(t, f, b)
	})
	t.Run("leftovers of a crashed write", func(t *testing.T) {
		dir := sinkDir(t)
		f := newSink(t, opts(dir))
		b := ca.ecBundle(t)
		mustWrite(t, f, ca.ecBundle(t), true)
		mustWrite(t, f, b, true)
		want := generations(t, dir)
		crashed := "..2999_01_01_00_00_00.000000000.deadbeef"
		ancient := "..2000_01_01_00_00_00.000000000.00000000"
		for _, g := range []string{crashed, ancient} {
			must(t, os.Mkdir(filepath.Join(dir, g), 0o700))
			must(t, os.WriteFile(filepath.Join(dir, g, "key.pem"), []byte("partial"), 0o600))
		}
		must(t, os.Symlink(crashed, filepath.Join(dir, dataTmpLink)))
		mustWrite(t, f, b, false)
		if got := generations(t, dir); !equalStrings(got, want) {
			t.Fatalf("generations = %v, want %v", got, want)
		}
		if exists(t, filepath.Join(dir, dataTmpLink)) {
			t.Fatalf("stale %s not removed", dataTmpLink)
		}
		mustCurrent(t, f, b)
	})
	t.Run("generation deleted under ..data", func(t *testing.T) {
		dir := sinkDir(t)
		f := newSink(t, opts(dir))
		b := ca.ecBundle(t)
		mustWrite(t, f, b, true)
		must(t, os.RemoveAll(filepath.Join(dir, dataTarget(t, dir))))
		if _, err := f.Current(); !errors.Is(err, bundle.ErrInvalid) || errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Current = %v, want ErrInvalid (not ErrNotExist)", err)
		}
		mustWrite(t, f, b, true)
		mustCurrent(t, f, b)
	})
}

func equalStrings(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

func TestCAOnly(t *testing.T) {
	ca := newCA(t, "CA-only CA")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	p := f.Paths()

	client := ca.ecBundle(t)
	mustWrite(t, f, client, true)
	caOnly := ca.caOnly()
	mustWrite(t, f, caOnly, true)
	mustCurrent(t, f, caOnly)
	if exists(t, p.Cert) || exists(t, p.Key) {
		t.Fatalf("CA-only write left visible cert/key names")
	}
	if got := fileMode(t, p.CA); got != 0o644 {
		t.Errorf("CA mode %04o, want 0644", got)
	}
	entries, err := os.ReadDir(filepath.Join(dir, dataTarget(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name() != metaName || entries[1].Name() != "ca.pem" {
		t.Fatalf("CA-only generation holds %v, want only ca.pem and the metadata", entries)
	}
	got, err := f.Current()
	if err != nil || got.Key != nil || got.Chain != nil {
		t.Fatalf("Current = %+v, %v; want a CA-only bundle", got, err)
	}
	mustWrite(t, f, caOnly, false)

	mustWrite(t, f, client, true)
	mustCurrent(t, f, client)
	checkModes(t, f, 0o600)
}

func TestLayoutSwitchRemovesOldLinks(t *testing.T) {
	ca := newCA(t, "switch CA")
	dir := sinkDir(t)
	pemSink := newSink(t, opts(dir))
	mustWrite(t, pemSink, ca.ecBundle(t), true)
	libpq := newSink(t, FileOptions{Dir: dir, Layout: "libpq", UID: -1, GID: -1})
	b := ca.ecBundle(t)
	mustWrite(t, libpq, b, true)
	mustCurrent(t, libpq, b)
	for _, n := range []string{"cert.pem", "key.pem", "ca.pem"} {
		if exists(t, filepath.Join(dir, n)) {
			t.Errorf("old layout link %s not removed", n)
		}
	}
}

func TestWriteRejectsBadBundles(t *testing.T) {
	ca := newCA(t, "bad CA")
	good := ca.ecBundle(t)
	tests := []struct {
		name string
		b    *bundle.Bundle
	}{
		{name: "nil", b: nil},
		{name: "no CAs", b: &bundle.Bundle{Key: good.Key, Chain: good.Chain}},
		{name: "key without cert", b: &bundle.Bundle{Key: good.Key, CAs: good.CAs}},
		{name: "cert without key", b: &bundle.Bundle{Chain: good.Chain, CAs: good.CAs}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sinkDir(t)
			f := newSink(t, opts(dir))
			changed, err := f.Write(t.Context(), tt.b)
			if !errors.Is(err, bundle.ErrInvalid) || changed {
				t.Fatalf("Write = %v, %v; want false, ErrInvalid", changed, err)
			}
			if exists(t, dir) {
				t.Fatalf("rejected Write touched the disk")
			}
		})
	}
}

func TestCurrentErrors(t *testing.T) {
	ca := newCA(t, "current CA")
	t.Run("missing dir", func(t *testing.T) {
		if _, err := newSink(t, opts(sinkDir(t))).Current(); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Current = %v, want ErrNotExist", err)
		}
	})
	t.Run("empty dir", func(t *testing.T) {
		if _, err := newSink(t, opts(t.TempDir())).Current(); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Current = %v, want ErrNotExist", err)
		}
	})
	other := ca.ecBundle(t)
	otherKey, err := other.KeyPEM()
	must(t, err)
	tests := []struct {
		name   string
		tamper func(t *testing.T, gen string)
	}{
		{name: "key missing", tamper: func(t *testing.T, gen string) { must(t, os.Remove(filepath.Join(gen, "key.pem"))) }},
		{name: "CA missing", tamper: func(t *testing.T, gen string) { must(t, os.Remove(filepath.Join(gen, "ca.pem"))) }},
		{name: "key mismatched", tamper: func(t *testing.T, gen string) { replace(t, filepath.Join(gen, "key.pem"), otherKey) }},
		{name: "cert truncated", tamper: func(t *testing.T, gen string) {
			data, err := os.ReadFile(filepath.Join(gen, "cert.pem"))
			must(t, err)
			replace(t, filepath.Join(gen, "cert.pem"), data[:len(data)/2])
		}},
		{name: "CA empty", tamper: func(t *testing.T, gen string) { replace(t, filepath.Join(gen, "ca.pem"), nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sinkDir(t)
			f := newSink(t, opts(dir))
			b := ca.ecBundle(t)
			mustWrite(t, f, b, true)
			tt.tamper(t, filepath.Join(dir, dataTarget(t, dir)))
			_, err := f.Current()
			if !errors.Is(err, bundle.ErrInvalid) || errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Current = %v, want ErrInvalid (not ErrNotExist)", err)
			}
			mustWrite(t, f, b, true) // an unreadable generation is replaced
			mustCurrent(t, f, b)
		})
	}
}

// TestPresent: Present sees every removal or rename that leaves a name of Names without
// a file (the visible link, ..data, the generation or a file in it, Dir itself), and
// nothing else: a complete sink, even one whose contents are wrong, is present.
func TestPresent(t *testing.T) {
	ca := newCA(t, "present CA")
	tests := []struct {
		name    string
		tamper  func(t *testing.T, dir, gen string)
		missing string // a path the error names; "" for present
		dirGone bool   // the error wraps fs.ErrNotExist (Dir gone)
	}{
		{name: "complete", tamper: func(*testing.T, string, string) {}},
		{name: "contents changed", tamper: func(t *testing.T, dir, gen string) { replace(t, filepath.Join(gen, "cert.pem"), []byte("x")) }},
		{name: "link removed", tamper: func(t *testing.T, dir, gen string) { must(t, os.Remove(filepath.Join(dir, "cert.pem"))) }, missing: "cert.pem"},
		{name: "link renamed", tamper: func(t *testing.T, dir, gen string) {
			must(t, os.Rename(filepath.Join(dir, "key.pem"), filepath.Join(dir, "key.old")))
		}, missing: "key.pem"},
		{name: "file in generation removed", tamper: func(t *testing.T, dir, gen string) { must(t, os.Remove(filepath.Join(gen, "ca.pem"))) }, missing: "ca.pem"},
		{name: "..data removed", tamper: func(t *testing.T, dir, gen string) { must(t, os.Remove(filepath.Join(dir, "..data"))) }, missing: "key.pem"},
		{name: "generation removed", tamper: func(t *testing.T, dir, gen string) { must(t, os.RemoveAll(gen)) }, missing: "key.pem"},
		{name: "directory removed", tamper: func(t *testing.T, dir, gen string) { must(t, os.RemoveAll(dir)) }, dirGone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := sinkDir(t)
			f := newSink(t, opts(dir))
			b := ca.ecBundle(t)
			mustWrite(t, f, b, true)
			tt.tamper(t, dir, filepath.Join(dir, dataTarget(t, dir)))
			err := f.Present(b)
			switch {
			case tt.dirGone:
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Present = %v, want ErrNotExist", err)
				}
			case tt.missing == "":
				if err != nil {
					t.Fatalf("Present = %v, want nil", err)
				}
			default:
				if !errors.Is(err, bundle.ErrInvalid) || !strings.Contains(err.Error(), filepath.Join(dir, tt.missing)+" is missing") {
					t.Fatalf("Present = %v, want ErrInvalid naming %s", err, tt.missing)
				}
			}
		})
	}
}

func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	must(t, os.WriteFile(path, data, 0o600))
}

func TestLock(t *testing.T) {
	ca := newCA(t, "lock CA")
	dir := sinkDir(t)
	f := newSink(t, opts(dir))
	unlock, err := f.Lock()
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if !exists(t, filepath.Join(dir, lockName)) {
		t.Fatalf("Lock did not create %s", lockName)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	b := ca.ecBundle(t)
	if changed, err := newSink(t, opts(dir)).Write(ctx, b); !errors.Is(err, context.DeadlineExceeded) || changed {
		t.Fatalf("Write while locked = %v, %v; want false, DeadlineExceeded", changed, err)
	}
	if exists(t, filepath.Join(dir, dataLink)) {
		t.Fatalf("Write wrote while another holder had the lock")
	}
	unlock()
	mustWrite(t, f, b, true)
}

// TestLockFileIsPrivate: flock needs only a read-only descriptor, so a lock file that
// other users can open is one any of them could hold to stop every rotation. It is
// created 0600, an existing wider one is narrowed, and (as root) user nobody cannot open
// it although it can read the certificate beside it.
func TestLockFileIsPrivate(t *testing.T) {
	ca := newCA(t, "lock mode CA")
	base := t.TempDir()
	// Reachable by others, as under /var/lib: the two directories t.TempDir made (never
	// TMPDIR itself).
	for _, p := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(base, "sink")
	f := newSink(t, opts(dir))
	mustWrite(t, f, ca.ecBundle(t), true)
	lock := filepath.Join(dir, lockName)
	if m := fileMode(t, lock); m != 0o600 {
		t.Errorf("%s created with mode %v, want 0600", lockName, m)
	}
	if err := os.Chmod(lock, 0o644); err != nil { // as an older version made it
		t.Fatal(err)
	}
	mustWrite(t, f, ca.ecBundle(t), true)
	if m := fileMode(t, lock); m != 0o600 {
		t.Errorf("an existing 0644 %s was left at %v, want 0600", lockName, m)
	}
	if os.Getuid() != 0 {
		return // the modes above are the property; the check as another user needs root
	}
	for _, tool := range []string{"setpriv", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("DBCERT_E2E") == "require" {
				t.Fatalf("%s (util-linux) is not installed (DBCERT_E2E=require)", tool)
			}
			t.Skipf("%s (util-linux) is not installed: the check as user nobody is skipped", tool)
		}
	}
	asNobody := func(path string) error {
		return exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "flock", "-n", "-s", path, "true").Run()
	}
	if err := asNobody(filepath.Join(dir, "cert.pem")); err != nil {
		t.Fatalf("control: nobody cannot flock the world-readable cert.pem: %v", err)
	}
	if err := asNobody(lock); err == nil {
		t.Errorf("user nobody could open and flock %s", lock)
	}
}

func BenchmarkWrite(b *testing.B) {
	ca := newCA(b, "bench CA")
	bundles := []*bundle.Bundle{ca.ecBundle(b), ca.ecBundle(b)}
	f := newSink(b, opts(sinkDir(b)))
	i := 0
	for b.Loop() {
		if _, err := f.Write(b.Context(), bundles[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkFirstWrite is an instance's first write: a new sink directory, one per
// iteration, on the file system of TMPDIR (ext4 and tmpfs differ by an order of
// magnitude), from as many goroutines as -cpu says (an agent starting many instances).
func BenchmarkFirstWrite(b *testing.B) {
	ca := newCA(b, "bench CA")
	bd := ca.ecBundle(b)
	root := b.TempDir()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f, err := NewFile(opts(filepath.Join(root, strconv.FormatInt(n.Add(1), 10))))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.Write(b.Context(), bd); err != nil {
				b.Fatal(err)
			}
		}
	})
}
