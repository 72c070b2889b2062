package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// Modes the sink applies.
const (
	defaultKeyMode os.FileMode = 0o600 // private key, when FileOptions.KeyMode is 0
	certMode       os.FileMode = 0o644 // certificates and CA, always
	dirMode        os.FileMode = 0o755 // Dir when the sink creates it, and generation dirs
)

// FileOptions configures a File sink. Zero values are defaults as documented per field.
type FileOptions struct {
	// Dir is the directory the sink owns. Required, absolute. Created on the first Write
	// (or Lock) when missing: Dir itself with exactly 0755, missing parents with 0755 less
	// the umask. Dir itself must not be a symlink; its parents may be.
	Dir string
	// Layout selects the file names: "pem" (default when empty) writes cert.pem, key.pem
	// and ca.pem; "libpq" writes postgresql.crt, postgresql.key and root.crt.
	Layout string
	// UID is the owner applied to every file on every write. -1 leaves the owner as the
	// process creates it. Note that 0 is not "unset": it means root.
	UID int
	// GID is the group applied to every file on every write; -1 leaves it unchanged.
	// Like UID, 0 means group root.
	GID int
	// KeyMode is the private key's mode; 0 means 0600. Only permission bits, and no world
	// bits. Certificates and the CA are always 0644.
	KeyMode os.FileMode
	// Token also writes the bundle's IAM login token to "token" (mode KeyMode).
	Token bool
	// PGPassUser, when set, also writes ".pgpass" (mode 0600, as libpq requires) with
	// one line "host:*:*:PGPassUser:token" (host from the bundle; any port, any db).
	PGPassUser string
}

// Names of the optional login-token files (manual IAM database authentication).
const (
	tokenName  = "token"
	pgpassName = ".pgpass"
)

// extraNames are visible names a sink may write besides its layout's.
var extraNames = []string{tokenName, pgpassName}

// Paths are the absolute visible paths of a sink's files. All three are always filled
// from the layout, also for CA-only bundles (whose cert and key names do not exist).
type Paths struct{ Cert, Key, CA string }

// layout is a set of visible file names.
type layout struct{ name, cert, key, ca string }

var layouts = []layout{
	{name: "pem", cert: "cert.pem", key: "key.pem", ca: "ca.pem"},
	{name: "libpq", cert: "postgresql.crt", key: "postgresql.key", ca: "root.crt"},
}

func (l layout) names() []string { return []string{l.cert, l.key, l.ca} }

// File is a file sink: it stores bundles in a directory it owns, switching all files of
// a bundle together (see the package documentation). Create one with NewFile.
type File struct {
	dir     string
	layout  layout
	uid     int
	gid     int
	keyMode os.FileMode
	token   bool
	pgUser  string

	mu sync.Mutex // serialises Write

	// hook, when set (tests only), runs at each named step of Write; an error aborts
	// the write there as a failure would.
	hook func(step string) error
}

// NewFile validates opts and returns the sink. It does not touch the disk.
func NewFile(opts FileOptions) (*File, error) {
	if opts.Dir == "" {
		return nil, errors.New("file sink: dir is required")
	}
	if !filepath.IsAbs(opts.Dir) {
		return nil, fmt.Errorf("file sink: dir %q is not an absolute path", opts.Dir)
	}
	dir := filepath.Clean(opts.Dir)
	if dir == "/" {
		return nil, errors.New("file sink: dir must not be the root directory")
	}
	l, err := lookupLayout(opts.Layout)
	if err != nil {
		return nil, err
	}
	if opts.UID < -1 || opts.GID < -1 {
		return nil, fmt.Errorf("file sink %s: owner %d and group %d must be -1 (unchanged) or a valid id", dir, opts.UID, opts.GID)
	}
	mode, err := keyMode(opts.KeyMode)
	if err != nil {
		return nil, fmt.Errorf("file sink %s: %w", dir, err)
	}
	if strings.ContainsAny(opts.PGPassUser, "\n\r") {
		return nil, fmt.Errorf("file sink %s: the .pgpass user holds a line break", dir)
	}
	return &File{dir: dir, layout: l, uid: opts.UID, gid: opts.GID, keyMode: mode, token: opts.Token, pgUser: opts.PGPassUser}, nil
}

func lookupLayout(name string) (layout, error) {
	if name == "" {
		name = "pem"
	}
	for _, l := range layouts {
		if l.name == name {
			return l, nil
		}
	}
	return layout{}, fmt.Errorf("file sink: unknown layout %q (want \"pem\" or \"libpq\")", name)
}

// keyMode applies the default and rejects modes with non-permission or world bits.
func keyMode(m os.FileMode) (os.FileMode, error) {
	if m == 0 {
		return defaultKeyMode, nil
	}
	if m&^os.ModePerm != 0 {
		return 0, fmt.Errorf("key mode %v: only permission bits are allowed", m)
	}
	if m&0o007 != 0 {
		return 0, fmt.Errorf("key mode %04o gives world access to the private key", uint32(m))
	}
	return m, nil
}

// Paths returns the absolute visible paths of the sink's files.
func (f *File) Paths() Paths {
	return Paths{
		Cert: filepath.Join(f.dir, f.layout.cert),
		Key:  filepath.Join(f.dir, f.layout.key),
		CA:   filepath.Join(f.dir, f.layout.ca),
	}
}

// Dir returns the directory the sink owns (cleaned, absolute).
func (f *File) Dir() string { return f.dir }

// String describes the sink for messages, e.g. "file sink /var/lib/x (libpq)".
func (f *File) String() string { return fmt.Sprintf("file sink %s (%s)", f.dir, f.layout.name) }

// genFile is one file of a generation.
type genFile struct {
	name string
	data []byte
	mode os.FileMode
}

// files encodes b into the files of one generation, key first, then cert, then CA. It
// refuses a nil bundle, one without CAs, and a key without a certificate or vice versa;
// everything else about the material is the caller's to verify (bundle.Verify).
func (f *File) files(b *bundle.Bundle) ([]genFile, error) {
	if b == nil {
		return nil, fmt.Errorf("%s: %w: nil bundle", f, bundle.ErrInvalid)
	}
	if len(b.CAs) == 0 {
		return nil, fmt.Errorf("%s: %w: bundle without CA certificates", f, bundle.ErrInvalid)
	}
	if (b.Key == nil) != (len(b.Chain) == 0) {
		return nil, fmt.Errorf("%s: %w: bundle needs both a private key and a certificate, or neither", f, bundle.ErrInvalid)
	}
	ca := genFile{name: f.layout.ca, data: b.CAPEM(), mode: certMode}
	if b.Key == nil {
		return []genFile{ca}, nil
	}
	key, err := b.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	out := []genFile{{name: f.layout.key, data: key, mode: f.keyMode}}
	extra, err := f.tokenFiles(b)
	if err != nil {
		return nil, err
	}
	out = append(out, extra...)
	return append(out, genFile{name: f.layout.cert, data: b.ChainPEM(), mode: certMode}, ca), nil
}

// tokenFiles are the optional login-token files of b (token, .pgpass).
func (f *File) tokenFiles(b *bundle.Bundle) ([]genFile, error) {
	if !f.token && f.pgUser == "" {
		return nil, nil
	}
	tok := b.LoginToken.Reveal()
	if tok == "" || strings.ContainsAny(tok, "\n\r") {
		return nil, fmt.Errorf("%s: %w: no usable login token for the token/.pgpass files", f, bundle.ErrInvalid)
	}
	var out []genFile
	if f.token {
		out = append(out, genFile{name: tokenName, data: []byte(tok + "\n"), mode: f.keyMode})
	}
	if f.pgUser != "" {
		if b.Host == "" {
			return nil, fmt.Errorf("%s: %w: no host address for .pgpass", f, bundle.ErrInvalid)
		}
		line := strings.Join([]string{pgpassEscape(b.Host), "*", "*", pgpassEscape(f.pgUser), pgpassEscape(tok)}, ":") + "\n"
		out = append(out, genFile{name: pgpassName, data: []byte(line), mode: 0o600})
	}
	return out, nil
}

// pgpassEscape escapes ':' and '\' in a .pgpass field.
func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// pgpassHost returns the (unescaped) host field of a .pgpass line.
func pgpassHost(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '\\' && i+1 < len(line):
			i++
			b.WriteByte(line[i])
		case c == ':':
			return b.String()
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// visible splits all known visible names into those a generation of files needs and
// those that must not exist (this layout's unused names, and the other layouts' names).
func (f *File) visible(files []genFile) (want, drop []string) {
	for _, gf := range files {
		want = append(want, gf.name)
	}
	for _, l := range layouts {
		for _, n := range append(l.names(), extraNames...) {
			if !slices.Contains(want, n) && !slices.Contains(drop, n) {
				drop = append(drop, n)
			}
		}
	}
	return want, drop
}

// Write stores b as the sink's current generation.
//
// When the current generation already holds an equal bundle (bundle.Equal), Write
// writes no new generation and returns changed=false; it still re-applies owner and
// mode to the current files (through descriptors) where they drifted, repairs the
// visible links and removes leftovers of crashed writes. Otherwise it writes a new
// generation and commits it atomically (see the package documentation); changed is
// true once that commit happened, even if a later clean-up step returns an error (the
// next Write repairs it).
//
// Write refuses a nil bundle or one without CAs but does not otherwise verify the
// material. It refuses to write through anything the sink did not create. A failure or
// ctx cancellation before the commit leaves the previous files untouched.
func (f *File) Write(ctx context.Context, b *bundle.Bundle) (changed bool, err error) {
	files, err := f.files(b)
	if err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.step(ctx, "start"); err != nil {
		return false, err
	}
	d, err := f.openDir(true)
	if err != nil {
		return false, err
	}
	defer d.close()
	unlock, err := lockCtx(ctx, d)
	if err != nil {
		return false, fmt.Errorf("%s: %w", f, err)
	}
	defer unlock()
	return f.writeLocked(ctx, d, b, files)
}

func (f *File) writeLocked(ctx context.Context, d *dirHandle, b *bundle.Bundle, files []genFile) (bool, error) {
	cur, err := readData(d)
	if err != nil {
		return false, err
	}
	if err := checkVisible(d, f.layout.names()); err != nil {
		return false, err
	}
	if cur.exists {
		if old, err := f.readAll(d, cur.gen); err == nil && bundle.Equal(old, b) {
			return false, f.refresh(d, cur.gen, files)
		}
	}
	gen, err := f.writeGeneration(ctx, d, files)
	if err != nil {
		return false, err
	}
	if err := commit(d, gen); err != nil {
		_ = d.removeAll(gen)
		return false, fmt.Errorf("%s: committing %s: %w", f, d.join(gen), err)
	}
	return true, f.finish(d, files, gen, cur.gen)
}

// step checks ctx and runs the test hook between the steps of a write.
func (f *File) step(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: write aborted before %s: %w", f, name, err)
	}
	if f.hook != nil {
		if err := f.hook(name); err != nil {
			return fmt.Errorf("%s: write aborted before %s: %w", f, name, err)
		}
	}
	return nil
}

// openDir opens Dir without following a symlink, creating it (mode 0755, parents too)
// when create is set and it is missing.
func (f *File) openDir(create bool) (*dirHandle, error) {
	fi, err := os.Lstat(f.dir)
	created := false
	switch {
	case errors.Is(err, fs.ErrNotExist) && create:
		if err := os.MkdirAll(f.dir, dirMode); err != nil {
			return nil, fmt.Errorf("%s: creating the directory: %w", f, err)
		}
		created = true
	case err != nil:
		return nil, fmt.Errorf("%s: %w", f, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, fmt.Errorf("refusing %s: the sink directory is a symlink; configure the real directory", f.dir)
	case !fi.IsDir():
		return nil, fmt.Errorf("refusing %s: not a directory", f.dir)
	}
	d, err := openDirPath(f.dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	if created {
		if err := d.chmod(dirMode); err != nil {
			d.close()
			return nil, err
		}
	}
	return d, nil
}

// writeGeneration creates a complete, fsynced generation directory holding files. On
// any error it removes what it created.
func (f *File) writeGeneration(ctx context.Context, d *dirHandle, files []genFile) (string, error) {
	gen, err := mkGeneration(d, time.Now())
	if err != nil {
		return "", fmt.Errorf("%s: %w", f, err)
	}
	if err := f.fillGeneration(ctx, d, gen, files); err != nil {
		_ = d.removeAll(gen)
		return "", err
	}
	return gen, nil
}

// fillGeneration writes files into the empty generation directory gen and fsyncs it.
func (f *File) fillGeneration(ctx context.Context, d *dirHandle, gen string, files []genFile) error {
	g, err := d.sub(gen)
	if err != nil {
		return err
	}
	defer g.close()
	for _, gf := range files {
		if err := f.step(ctx, "writing "+gf.name); err != nil {
			return err
		}
		if err := g.createFile(gf.name, gf.data, gf.mode, f.uid, f.gid); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	if err := g.chmod(dirMode); err != nil {
		return err
	}
	if err := g.sync(); err != nil {
		return err
	}
	return f.step(ctx, "commit")
}

// finish runs after the commit: make it durable, then repair visible links and prune
// generations other than gen and prev. The context is no longer consulted: the commit
// happened and the links must follow it.
func (f *File) finish(d *dirHandle, files []genFile, gen, prev string) error {
	if err := d.sync(); err != nil {
		return err
	}
	if f.hook != nil {
		if err := f.hook("links"); err != nil {
			return fmt.Errorf("%s: after commit: %w", f, err)
		}
	}
	want, drop := f.visible(files)
	linked, err := repairLinks(d, want, drop)
	if err != nil {
		return err
	}
	if err := prune(d, gen, prev); err != nil {
		return err
	}
	return syncIf(d, linked)
}

// syncIf fsyncs d when visible links changed. Removals of old generations need no
// fsync: one that reappears after a crash is removed by the next Write.
func syncIf(d *dirHandle, linked bool) error {
	if !linked {
		return nil
	}
	return d.sync()
}

// refresh is Write for an unchanged bundle: re-apply owner and mode to the current
// files, repair the visible links, keep the current and previous generations and
// remove other generations and a stale ..data_tmp. Without a commit it cannot know the
// previous generation, so it takes the newest one named (timestamped) before the
// current; newer ones are leftovers of writes that crashed before their commit.
func (f *File) refresh(d *dirHandle, gen string, files []genFile) error {
	g, err := d.sub(gen)
	if err != nil {
		return err
	}
	defer g.close()
	for _, gf := range files {
		if _, err := g.fixOwnerMode(gf.name, gf.mode, f.uid, f.gid); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	want, drop := f.visible(files)
	linked, err := repairLinks(d, want, drop)
	if err != nil {
		return err
	}
	prev, err := previousOf(d, gen)
	if err != nil {
		return err
	}
	if err := prune(d, gen, prev); err != nil {
		return err
	}
	return syncIf(d, linked)
}

// Current reads back the current generation.
//
// It resolves Dir/..data once and reads every file from that generation directory, so
// the result is consistent even while a Write runs. The error wraps fs.ErrNotExist when
// nothing was written yet (no Dir or no ..data). It wraps bundle.ErrInvalid when the
// files are partial, unparseable or mismatched (key not the leaf's), and also when a
// visible name the bundle needs is missing or one it does not use is still the sink's
// link — the state a crash between commit and link repair leaves (or a concurrent
// first Write has not finished); Write repairs it.
// Anything the sink did not create where its files belong is reported as an error
// that wraps neither. Current never follows a symlink it did not create.
func (f *File) Current() (*bundle.Bundle, error) {
	d, err := f.openDir(false)
	if err != nil {
		return nil, err
	}
	defer d.close()
	cur, err := readData(d)
	if err != nil {
		return nil, err
	}
	if cur.gen == "" {
		return nil, fmt.Errorf("%s: nothing written yet (no %s): %w", f, d.join(dataLink), fs.ErrNotExist)
	}
	if !cur.exists {
		return nil, fmt.Errorf("%s: %w: %s points to %s, which does not exist", f, bundle.ErrInvalid, d.join(dataLink), cur.gen)
	}
	b, err := f.readAll(d, cur.gen)
	if err != nil {
		return nil, err
	}
	if err := f.checkLinks(d, b); err != nil {
		return nil, err
	}
	b.Issued = generationTime(cur.gen)
	return b, nil
}

// readAll reads generation gen with the files this sink is configured for.
func (f *File) readAll(d *dirHandle, gen string) (*bundle.Bundle, error) {
	b, err := readGeneration(d, gen, f.layout)
	if err != nil {
		return nil, err
	}
	if err := f.readTokenFiles(d, gen, b); err != nil {
		return nil, err
	}
	return b, nil
}

// readTokenFiles reads the optional token and .pgpass files of generation gen into b.
// A sink configured for them whose generation lacks them holds incomplete files.
func (f *File) readTokenFiles(d *dirHandle, gen string, b *bundle.Bundle) error {
	if !f.token && f.pgUser == "" {
		return nil
	}
	g, err := d.sub(gen)
	if err != nil {
		return fmt.Errorf("%w: opening generation: %v", bundle.ErrInvalid, err)
	}
	defer g.close()
	if f.token {
		data, err := readOptional(g, tokenName)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return fmt.Errorf("%s: %w: %s is missing or empty", f, bundle.ErrInvalid, g.join(tokenName))
		}
		b.LoginToken = bundle.Secret(strings.TrimSpace(string(data)))
	}
	if f.pgUser != "" {
		data, err := readOptional(g, pgpassName)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return fmt.Errorf("%s: %w: %s is missing or empty", f, bundle.ErrInvalid, g.join(pgpassName))
		}
		line := strings.TrimRight(string(data), "\n")
		b.Host = pgpassHost(line)
		if !f.token {
			// The token is the last field.
			if i := strings.LastIndex(line, ":"); i >= 0 {
				b.LoginToken = bundle.Secret(strings.NewReplacer(`\\`, `\`, `\:`, `:`).Replace(line[i+1:]))
			}
		}
	}
	return nil
}

// checkLinks verifies that the visible names match b: each name b uses is the sink's
// link, each it does not use is absent.
func (f *File) checkLinks(d *dirHandle, b *bundle.Bundle) error {
	want := []string{f.layout.ca}
	unused := []string{f.layout.cert, f.layout.key}
	if b.HasClientCert() {
		want, unused = f.layout.names(), nil
	}
	for _, n := range extraNames {
		if (n == tokenName && f.token) || (n == pgpassName && f.pgUser != "") {
			want = append(want, n)
		} else {
			unused = append(unused, n)
		}
	}
	for _, n := range append(f.layout.names(), extraNames...) {
		k, err := visibleKind(d, n)
		if err != nil {
			return err
		}
		switch {
		case k == linkForeign:
			return foreignError(d, n)
		case k == linkAbsent && slices.Contains(want, n):
			return fmt.Errorf("%s: %w: %s is missing", f, bundle.ErrInvalid, d.join(n))
		case k == linkOurs && slices.Contains(unused, n):
			return fmt.Errorf("%s: %w: stale %s (the current bundle is CA-only)", f, bundle.ErrInvalid, d.join(n))
		}
	}
	return nil
}

// readGeneration reads and parses the files of generation gen. Missing, partial,
// unparseable or mismatched files give an error wrapping bundle.ErrInvalid (and never
// fs.ErrNotExist).
func readGeneration(d *dirHandle, gen string, l layout) (*bundle.Bundle, error) {
	g, err := d.sub(gen)
	if err != nil {
		return nil, fmt.Errorf("%w: opening generation: %v", bundle.ErrInvalid, err)
	}
	defer g.close()
	caPEM, err := readOptional(g, l.ca)
	if err != nil {
		return nil, err
	}
	certPEM, err := readOptional(g, l.cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readOptional(g, l.key)
	if err != nil {
		return nil, err
	}
	if caPEM == nil {
		return nil, fmt.Errorf("%w: %s is missing", bundle.ErrInvalid, g.join(l.ca))
	}
	if (certPEM == nil) != (keyPEM == nil) {
		return nil, fmt.Errorf("%w: %s holds only one of %s and %s", bundle.ErrInvalid, g.path, l.cert, l.key)
	}
	return parseGeneration(g, l, caPEM, certPEM, keyPEM)
}

// readOptional reads name; a missing file gives nil data and no error.
func readOptional(g *dirHandle, name string) ([]byte, error) {
	data, err := g.readFile(name)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte{} // present but empty: distinct from missing, and fails to parse
	}
	return data, nil
}

// parseGeneration parses the PEM files of a generation and checks the key is the leaf's.
func parseGeneration(g *dirHandle, l layout, caPEM, certPEM, keyPEM []byte) (*bundle.Bundle, error) {
	cas, err := bundle.ParseCertsPEM(caPEM, g.join(l.ca))
	if err != nil {
		return nil, err
	}
	b := &bundle.Bundle{CAs: cas}
	if certPEM == nil {
		return b, nil
	}
	if b.Chain, err = bundle.ParseCertsPEM(certPEM, g.join(l.cert)); err != nil {
		return nil, err
	}
	if b.Key, err = bundle.ParseKeyPEM(keyPEM, g.join(l.key)); err != nil {
		return nil, err
	}
	if !bundle.PublicKeysEqual(b.Chain[0].PublicKey, b.Key.Public()) {
		return nil, fmt.Errorf("%w: %s does not match the certificate %s", bundle.ErrInvalid, g.join(l.key), g.join(l.cert))
	}
	return b, nil
}

// Lock takes the exclusive flock(2) on Dir/..lock that every Write holds, creating Dir
// and the lock file when missing, and blocks until it is available. It lets another
// process (or a tool) coordinate with writers; unlock releases it. Do not call Write on
// a sink of the same Dir while holding the lock: Write would wait for it (until its
// context ends).
func (f *File) Lock() (unlock func(), err error) {
	d, err := f.openDir(true)
	if err != nil {
		return nil, err
	}
	fd, err := lockFile(d)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	if err := retryEINTR(func() error { return unix.Flock(fd, unix.LOCK_EX) }); err != nil {
		_ = unix.Close(fd)
		d.close()
		return nil, fmt.Errorf("%s: %w", f, d.pathErr("lock", lockName, err))
	}
	return func() {
		_ = unix.Flock(fd, unix.LOCK_UN)
		_ = unix.Close(fd)
		d.close()
	}, nil
}
