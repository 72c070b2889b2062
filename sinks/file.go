package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
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
	certMode       os.FileMode = 0o644 // certificates, CA and connection files, always
	dirMode        os.FileMode = 0o755 // Dir when the sink creates it, and generation dirs
)

// FileOptions configures a File sink. Zero values are defaults as documented per field.
type FileOptions struct {
	// Dir is the directory the sink owns. Required, absolute. Created on the first Write
	// (or Lock) when missing: Dir itself with exactly 0755, missing parents with 0755 less
	// the umask. Dir itself must not be a symlink; its parents may be.
	Dir string
	// Layout selects the file names: "pem" (default when empty) writes cert.pem, key.pem,
	// key.pk8 and ca.pem; "libpq" writes postgresql.crt, postgresql.key, postgresql.pk8
	// and root.crt.
	Layout string
	// UID is the owner applied to every file on every write. -1 leaves the owner as the
	// process creates it. Note that 0 is not "unset": it means root.
	UID int
	// GID is the group applied to every file on every write; -1 leaves it unchanged.
	// Like UID, 0 means group root.
	GID int
	// KeyMode is the mode of the private key files (PEM, DER, key store, token); 0 means
	// 0600. Only permission bits, and no world bits. Certificates, the CA, the trust store
	// and connection files are always 0644.
	KeyMode os.FileMode
	// Token also writes the bundle's IAM login token to "token" (mode KeyMode).
	Token bool
	// PGPassUser, when set, also writes ".pgpass" (mode 0600, as libpq requires) with
	// one line "host:*:*:PGPassUser:token" (host from the bundle; any port, any db).
	PGPassUser string
	// PKCS12, when set, also writes keystore.p12 and truststore.p12 (see PKCS12Options).
	PKCS12 *PKCS12Options
	// Connection, when set, also writes connection files for client-certificate bundles
	// of PostgreSQL and MySQL engines (see Connection). nil: none.
	Connection *Connection
}

// Connection says how clients connect (spec §7). For a bundle whose Engine starts with
// "POSTGRES" the sink writes pg_service.conf and connection.env (libpq variables,
// DATABASE_URL, JDBC_URL); for "MYSQL" my.cnf and connection.env (MYSQL_HOST,
// MYSQL_TCP_PORT). Other engines (SQL Server, unknown) and CA-only bundles get none.
// All paths in them are the sink's absolute visible names.
type Connection struct {
	// Service names the pg_service.conf section: the instance name. Required.
	Service string
	User    string // database user; "" leaves it out
	DBName  string // database; "" leaves it out
	// Host overrides the bundle's Host (the address from the API); "" uses the bundle's.
	Host string
	// Port; 0 is the engine's default (5432 PostgreSQL, 3306 MySQL).
	Port int
}

// Paths are the absolute visible paths of a sink's files, all filled from the layout and
// the fixed names, whether or not the sink writes them for a given bundle (see Names).
type Paths struct {
	Cert, Key, CA string
	KeyDER        string // PKCS#8 DER key: key.pk8 / postgresql.pk8
	KeyStore      string // keystore.p12
	TrustStore    string // truststore.p12
	PGService     string // pg_service.conf
	ConnEnv       string // connection.env
	MyCnf         string // my.cnf
}

// layout is a set of visible file names.
type layout struct{ name, cert, key, pk8, ca string }

var layouts = []layout{
	{name: "pem", cert: "cert.pem", key: "key.pem", pk8: "key.pk8", ca: "ca.pem"},
	{name: "libpq", cert: "postgresql.crt", key: "postgresql.key", pk8: "postgresql.pk8", ca: "root.crt"},
}

func (l layout) names() []string { return []string{l.cert, l.key, l.pk8, l.ca} }

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
	p12     *PKCS12Options
	conn    *Connection

	mu sync.Mutex // serialises Write

	// hook, when set (tests only), runs at each named step of Write; an error aborts
	// the write there as a failure would ("renamed": as an error reported by a commit
	// rename that took effect).
	hook func(step string) error
}

// NewFile validates opts and returns the sink. It does not touch the disk (the PKCS#12
// password is read at every Write, not here).
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
	if p := opts.PKCS12; p != nil && p.PasswordFile == "" && p.Password == "" {
		return nil, fmt.Errorf("file sink %s: pkcs12 needs password_file or password", dir)
	}
	f := &File{dir: dir, layout: l, uid: opts.UID, gid: opts.GID, keyMode: mode, token: opts.Token, pgUser: opts.PGPassUser, p12: opts.PKCS12}
	if c := opts.Connection; c != nil {
		cc := *c
		f.conn = &cc
		if err := f.checkConnection(); err != nil {
			return nil, fmt.Errorf("file sink %s: %w", dir, err)
		}
	}
	return f, nil
}

// checkConnection validates the configured connection values in every format, with a
// placeholder for a host the API will give.
func (f *File) checkConnection() error {
	if f.conn.Port < 0 || f.conn.Port > 65535 {
		return fmt.Errorf("connection port %d is out of range", f.conn.Port)
	}
	for _, e := range []string{"POSTGRES", "MYSQL"} {
		p := f.connParams(&bundle.Bundle{Host: "host.invalid", Engine: e})
		if _, err := f.connFiles(p, engineOf(e)); err != nil {
			return err
		}
	}
	return nil
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
	j := func(n string) string { return filepath.Join(f.dir, n) }
	return Paths{
		Cert: j(f.layout.cert), Key: j(f.layout.key), CA: j(f.layout.ca), KeyDER: j(f.layout.pk8),
		KeyStore: j(keystoreName), TrustStore: j(truststoreName),
		PGService: j(pgServiceName), ConnEnv: j(connEnvName), MyCnf: j(myCnfName),
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

// files encodes b into the files of one generation, one per name of f.names, in that
// order, followed by the metadata (naming prev, the generation it replaces, "" for
// none). pw is the PKCS#12 password ("" without PKCS12). It
// refuses a nil bundle, one without CAs, and a key without a certificate or vice versa;
// everything else about the material is the caller's to verify (bundle.Verify).
func (f *File) files(b *bundle.Bundle, pw bundle.Secret, now time.Time, prev string) ([]genFile, error) {
	if err := checkShape(b); err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	det, err := f.derived(b)
	if err != nil {
		return nil, err
	}
	var out []genFile
	for _, n := range f.names(kindOf(b)) {
		gf := genFile{name: n, mode: f.modeOf(n)}
		switch n {
		case keystoreName:
			gf.data, err = encodeKeyStore(b, pw)
		case truststoreName:
			gf.data, err = encodeTrustStore(b, pw)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if gf.data == nil {
			gf.data = det[n]
		}
		out = append(out, gf)
	}
	m := metaOf(b, now)
	m.Previous = prev
	return append(out, genFile{name: metaName, data: m.encode(), mode: metaMode}), nil
}

// storedModeOf is the mode the sink gives the file n of any generation, whichever
// layout wrote it; ok is false for a name no sink writes.
func (f *File) storedModeOf(n string) (mode os.FileMode, ok bool) {
	switch n {
	case metaName:
		return metaMode, true
	case pgpassName:
		return 0o600, true
	case keystoreName, tokenName:
		return f.keyMode, true
	}
	for _, l := range layouts {
		if n == l.key || n == l.pk8 {
			return f.keyMode, true
		}
	}
	if slices.Contains(allNames(), n) {
		return certMode, true
	}
	return 0, false
}

// fixPrevious applies the sink's owner and modes to the files of the previous
// generation gen, which stays readable until the next rotation and holds a key whose
// certificate is usually still valid: a key mode or group narrowed in the config must
// not leave it readable there the old way. A missing gen is no error.
func (f *File) fixPrevious(d *dirHandle, gen string) error {
	if gen == "" {
		return nil
	}
	if _, ok, err := d.lstat(gen); err != nil || !ok {
		return err
	}
	g, err := d.sub(gen)
	if err != nil {
		return err
	}
	defer g.close()
	names, err := g.names()
	if err != nil {
		return err
	}
	for _, n := range names {
		if mode, ok := f.storedModeOf(n); ok {
			if _, err := g.fixOwnerMode(n, mode, f.uid, f.gid); err != nil {
				return fmt.Errorf("%s: previous generation: %w", f, err)
			}
		}
	}
	return nil
}

// modeOf is the mode of the visible name n: KeyMode for everything holding the private
// key or the login token, 0600 for .pgpass (libpq's rule), 0644 for the rest.
func (f *File) modeOf(n string) os.FileMode {
	if m, ok := f.storedModeOf(n); ok {
		return m
	}
	return certMode
}

// checkShape refuses a nil bundle, one without CAs, and a key without a certificate or
// vice versa.
func checkShape(b *bundle.Bundle) error {
	switch {
	case b == nil:
		return fmt.Errorf("%w: nil bundle", bundle.ErrInvalid)
	case len(b.CAs) == 0:
		return fmt.Errorf("%w: bundle without CA certificates", bundle.ErrInvalid)
	case (b.Key == nil) != (len(b.Chain) == 0):
		return fmt.Errorf("%w: bundle needs both a private key and a certificate, or neither", bundle.ErrInvalid)
	}
	return nil
}

// derived returns the content of every file of f.names(kindOf(b)) that is a pure
// function of b (everything but the PKCS#12 files, which are salted), by name. Write
// writes them and Current compares them byte for byte.
func (f *File) derived(b *bundle.Bundle) (map[string][]byte, error) {
	k := kindOf(b)
	out := map[string][]byte{f.layout.ca: b.CAPEM()}
	if !k.client {
		return out, nil
	}
	der, err := b.KeyDER()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	out[f.layout.key], out[f.layout.pk8], out[f.layout.cert] = bundle.PKCS8PEM(der), der, b.ChainPEM()
	tok, err := f.tokenFiles(b)
	if err != nil {
		return nil, err
	}
	maps.Copy(out, tok)
	if f.conn != nil && k.engine != engineNone {
		conn, err := f.connFiles(f.connParams(b), k.engine)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", f, bundle.ErrInvalid, err)
		}
		maps.Copy(out, conn)
	}
	return out, nil
}

// connParams are the values of the connection files for b.
func (f *File) connParams(b *bundle.Bundle) connParams {
	c, p := f.conn, f.Paths()
	cp := connParams{Service: c.Service, Host: c.Host, Port: c.Port, User: c.User, DBName: c.DBName,
		Cert: p.Cert, Key: p.Key, KeyDER: p.KeyDER, CA: p.CA}
	if cp.Host == "" {
		cp.Host = b.Host
	}
	if cp.Port == 0 {
		cp.Port = defaultPostgresPort
		if engineOf(b.Engine) == engineMySQL {
			cp.Port = defaultMySQLPort
		}
	}
	return cp
}

// connFiles formats the connection files of engine e.
func (f *File) connFiles(p connParams, e engineKind) (map[string][]byte, error) {
	if p.Host == "" {
		return nil, errors.New("no host address for the connection files (set connection host, or the API gave none)")
	}
	out := map[string][]byte{}
	var err error
	switch e {
	case enginePostgres:
		if out[pgServiceName], err = formatPGService(p); err != nil {
			return nil, err
		}
		out[connEnvName], err = formatPGEnv(p)
	case engineMySQL:
		if out[myCnfName], err = formatMyCnf(p); err != nil {
			return nil, err
		}
		out[connEnvName], err = formatMySQLEnv(p)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// tokenFiles are the optional login-token files of b (token, .pgpass), by name.
func (f *File) tokenFiles(b *bundle.Bundle) (map[string][]byte, error) {
	if !f.token && f.pgUser == "" {
		return nil, nil
	}
	tok := b.LoginToken.Reveal()
	if tok == "" || strings.ContainsAny(tok, "\n\r") {
		return nil, fmt.Errorf("%s: %w: no usable login token for the token/.pgpass files", f, bundle.ErrInvalid)
	}
	out := map[string][]byte{}
	if f.token {
		out[tokenName] = []byte(tok + "\n")
	}
	if f.pgUser != "" {
		if b.Host == "" {
			return nil, fmt.Errorf("%s: %w: no host address for .pgpass", f, bundle.ErrInvalid)
		}
		line := strings.Join([]string{pgpassEscape(b.Host), "*", "*", pgpassEscape(f.pgUser), pgpassEscape(tok)}, ":") + "\n"
		out[pgpassName] = []byte(line)
	}
	return out, nil
}

// pgpassEscape escapes ':' and '\' in a .pgpass field.
func pgpassEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `:`, `\:`).Replace(s)
}

// pgpassFields splits a .pgpass line into its fields, unescaped (pgpassEscape's inverse).
func pgpassFields(line string) []string {
	var fields []string
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '\\' && i+1 < len(line):
			i++
			b.WriteByte(line[i])
		case c == ':':
			fields = append(fields, b.String())
			b.Reset()
		default:
			b.WriteByte(c)
		}
	}
	return append(fields, b.String())
}

// Write stores b as the sink's current generation.
//
// Before writing anything it checks every visible name the sink writes for b (Names):
// one that exists and is not the sink's own link is refused, and the refusal changes
// nothing (no new generation, ..data unchanged). The PKCS#12 password is read here, at
// every Write.
//
// When the current generation already holds the same files — an equal bundle
// (bundle.Equal), key stores that open with the current password and hold its material
// — Write writes no new generation and returns changed=false; it still re-applies owner
// and mode to the current files (through descriptors) where they drifted, repairs the
// visible links, removes leftovers of crashed writes, and atomically replaces the
// generation's metadata when b brings a later Issued (a CA-only instance's newer
// download of an unchanged CA) or another token expiry. Otherwise it writes a new
// generation and commits it atomically (see the package documentation); changed is
// true once that commit happened, even if a later clean-up step returns an error (the
// next Write repairs it).
//
// Write refuses a nil bundle or one without CAs but does not otherwise verify the
// material. It refuses to write through anything the sink did not create. A failure or
// ctx cancellation before the commit leaves the previous files untouched.
func (f *File) Write(ctx context.Context, b *bundle.Bundle) (changed bool, err error) {
	if err := checkShape(b); err != nil {
		return false, fmt.Errorf("%s: %w", f, err)
	}
	var pw bundle.Secret
	if f.p12 != nil {
		if pw, err = f.p12.password(); err != nil {
			return false, fmt.Errorf("%s: %w", f, err)
		}
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
	changed, err = f.writeLocked(ctx, d, b, pw)
	if err != nil && !changed {
		err = diskFault(f, err)
	}
	return changed, err
}

// diskFaultError is a write that failed because the file system is full or read-only:
// one sentence naming the sink and the cause, since nothing of the attempt is left.
type diskFaultError struct {
	sink  string
	errno unix.Errno
	err   error
}

func (e *diskFaultError) Error() string {
	return fmt.Sprintf("%s: %s, so no new files were written and the previous files are unchanged", e.sink, e.errno.Error())
}

func (e *diskFaultError) Unwrap() error { return e.err }

// diskFault turns an error of a write that changed nothing into a diskFaultError when
// its cause is a full (ENOSPC, EDQUOT) or read-only (EROFS) file system.
func diskFault(f *File, err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) && (errno == unix.ENOSPC || errno == unix.EDQUOT || errno == unix.EROFS) {
		return &diskFaultError{sink: f.String(), errno: errno, err: err}
	}
	return err
}

func (f *File) writeLocked(ctx context.Context, d *dirHandle, b *bundle.Bundle, pw bundle.Secret) (bool, error) {
	cur, err := readData(d)
	if err != nil {
		return false, err
	}
	want := f.Names(b)
	if err := checkVisible(d, want); err != nil {
		return false, err
	}
	if cur.exists {
		if old, err := f.readAll(d, cur.gen); err == nil && f.sameFiles(d, cur.gen, old, b, pw) {
			return false, f.refresh(d, cur.gen, b, old)
		}
	}
	prev := ""
	if cur.exists {
		prev = cur.gen
	}
	files, err := f.files(b, pw, time.Now(), prev)
	if err != nil {
		return false, err
	}
	gen, err := f.writeGeneration(ctx, d, files)
	if err != nil {
		return false, err
	}
	if err := commit(d, gen, f.hook); err != nil {
		if _, tried := errors.AsType[*renameError](err); !tried {
			_ = d.removeAll(gen) // ..data was not touched
		}
		return false, fmt.Errorf("%s: committing %s: %w", f, d.join(gen), err)
	}
	return true, f.finish(d, b, gen, cur.gen)
}

// sameFiles reports whether generation gen, read back as old, already holds b's files:
// the same material, engine and DNS name (readAll has compared the other derived files
// with old), and key stores that open with pw and hold b's material.
func (f *File) sameFiles(d *dirHandle, gen string, old, b *bundle.Bundle, pw bundle.Secret) bool {
	if !f.token && f.pgUser == "" && b.LoginToken != "" {
		stored := *b // this sink does not store the login token
		stored.LoginToken = ""
		b = &stored
	}
	if !bundle.Equal(old, b) {
		return false
	}
	if f.p12 == nil {
		return true
	}
	g, err := d.sub(gen)
	if err != nil {
		return false
	}
	defer g.close()
	if b.HasClientCert() {
		data, err := g.readFile(keystoreName)
		if err != nil || !keyStoreHolds(data, pw, b) {
			return false
		}
	}
	data, err := g.readFile(truststoreName)
	return err == nil && trustStoreHolds(data, pw, b)
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

// finish runs after the commit: repair visible links, prune generations other than gen
// and prev, and fsync d once, which makes the commit and the new links durable together
// (also when a step fails: the commit happened). The context is no longer consulted:
// the commit happened and the links must follow it.
func (f *File) finish(d *dirHandle, b *bundle.Bundle, gen, prev string) (err error) {
	defer func() {
		if serr := d.sync(); err == nil {
			err = serr
		}
	}()
	if f.hook != nil {
		if err := f.hook("links"); err != nil {
			return fmt.Errorf("%s: after commit: %w", f, err)
		}
	}
	listed, err := d.names()
	if err != nil {
		return err
	}
	want, drop := f.split(kindOf(b))
	if _, err := repairLinks(d, listed, want, drop); err != nil {
		return err
	}
	if err := prune(d, listed, gen, prev); err != nil {
		return err
	}
	return f.fixPrevious(d, prev)
}

// syncIf fsyncs d when visible links changed. Removals of old generations need no
// fsync: one that reappears after a crash is removed by the next Write.
func syncIf(d *dirHandle, linked bool) error {
	if !linked {
		return nil
	}
	return d.sync()
}

// refresh is Write for unchanged files (old is what gen holds): re-apply owner and
// mode to the current files, store b's later metadata, repair the visible links, keep
// the current and previous generations and remove other generations and a stale
// ..data_tmp. The previous generation is the one the current generation's metadata
// names (its commit replaced it); for a generation written before metadata named it,
// the newest one named (timestamped) before the current, newer ones being leftovers of
// writes that crashed before their commit.
func (f *File) refresh(d *dirHandle, gen string, b, old *bundle.Bundle) error {
	g, err := d.sub(gen)
	if err != nil {
		return err
	}
	defer g.close()
	k := kindOf(b)
	for _, n := range f.names(k) {
		if _, err := g.fixOwnerMode(n, f.modeOf(n), f.uid, f.gid); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	oldMeta, has, err := readMeta(g)
	if err != nil {
		return err
	}
	if !has {
		oldMeta = metaOf(old, old.Issued)
	}
	if m := merged(oldMeta, b); !has || m != oldMeta {
		if err := f.replaceMeta(g, m); err != nil {
			return fmt.Errorf("%s: updating the metadata: %w", f, err)
		}
	} else if _, err := g.fixOwnerMode(metaName, metaMode, f.uid, f.gid); err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	listed, err := d.names()
	if err != nil {
		return err
	}
	want, drop := f.split(k)
	linked, err := repairLinks(d, listed, want, drop)
	if err != nil {
		return err
	}
	prev := oldMeta.Previous
	if !isGeneration(prev) || !slices.Contains(listed, prev) {
		prev = previousOf(listed, gen) // written before metadata named it, or gone
	}
	if err := prune(d, listed, gen, prev); err != nil {
		return err
	}
	if err := f.fixPrevious(d, prev); err != nil {
		return err
	}
	return syncIf(d, linked)
}

// Current reads back the current generation, with the metadata stored next to it
// (Issued, TokenExpiry, Host, Engine, DNSName; for generations written before metadata
// existed, Issued is the generation's time and Host comes from .pgpass when present).
//
// It resolves Dir/..data once and reads every file from that generation directory, so
// the result is consistent even while a Write runs. The error wraps fs.ErrNotExist when
// nothing was written yet (no Dir or no ..data). It wraps bundle.ErrInvalid when the
// files are partial, unparseable or mismatched (key not the leaf's, a DER key or
// connection file that does not match, a name of Names missing from the generation),
// and also when a visible name the bundle needs is missing or one it does not use is
// still the sink's link — the state a crash between commit and link repair leaves (or a
// concurrent first Write has not finished); Write repairs it. The PKCS#12 files are
// checked for presence only (opening them needs the password; Write checks them).
// Anything the sink did not create at a name of Names is reported as an error that
// wraps neither. Current never follows a symlink it did not create.
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
	return b, nil
}

// Present reports cheaply (a stat per visible name, nothing read or parsed) whether
// every name of Names(b) still leads to a file: nil if so, else an error wrapping
// bundle.ErrInvalid (fs.ErrNotExist when Dir is gone) that names the first missing one.
// It sees removals and renames, not changed contents or a name replaced by another
// file (Current checks those). A watcher uses it to catch a removal that came before
// its watch began.
func (f *File) Present(b *bundle.Bundle) error {
	d, err := f.openDir(false)
	if err != nil {
		return err
	}
	defer d.close()
	for _, n := range f.Names(b) {
		var st unix.Stat_t
		err := retryEINTR(func() error { return unix.Fstatat(d.fd, n, &st, 0) })
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: %w: %s is missing", f, bundle.ErrInvalid, d.join(n))
		}
		if err != nil {
			return d.pathErr("stat", n, err)
		}
	}
	return nil
}

// readAll reads generation gen with the files this sink is configured for, and its
// metadata, and checks that every file of f.Names exists and every derived file
// matches the material.
func (f *File) readAll(d *dirHandle, gen string) (*bundle.Bundle, error) {
	b, err := readGeneration(d, gen, f.layout)
	if err != nil {
		return nil, err
	}
	g, err := d.sub(gen)
	if err != nil {
		return nil, fmt.Errorf("%w: opening generation: %v", bundle.ErrInvalid, err)
	}
	defer g.close()
	m, has, err := readMeta(g)
	if err != nil {
		return nil, err
	}
	if has {
		m.apply(b)
	} else {
		b.Issued = generationTime(gen)
	}
	if err := f.readTokenFiles(g, b, !has); err != nil {
		return nil, err
	}
	det, err := f.derived(b)
	if err != nil {
		return nil, err
	}
	for _, n := range f.Names(b) {
		data, err := readOptional(g, n)
		if err != nil {
			return nil, err
		}
		switch want, ok := det[n]; {
		case data == nil:
			return nil, fmt.Errorf("%s: %w: %s is missing", f, bundle.ErrInvalid, g.join(n))
		case ok && !bytes.Equal(data, want):
			return nil, fmt.Errorf("%s: %w: %s does not match the other files", f, bundle.ErrInvalid, g.join(n))
		}
	}
	return b, nil
}

// readTokenFiles reads the optional token and .pgpass files of generation g into b;
// hostFromPGPass takes b.Host from .pgpass (generations without metadata).
// A sink configured for them whose generation lacks them holds incomplete files.
func (f *File) readTokenFiles(g *dirHandle, b *bundle.Bundle, hostFromPGPass bool) error {
	if !b.HasClientCert() || (!f.token && f.pgUser == "") {
		return nil
	}
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
		fields := pgpassFields(strings.TrimRight(string(data), "\n"))
		if hostFromPGPass {
			b.Host = fields[0]
		}
		if !f.token && len(fields) > 1 {
			b.LoginToken = bundle.Secret(fields[len(fields)-1]) // the token is the last field
		}
	}
	return nil
}

// checkLinks verifies that the visible names match b: each name of Names(b) is the
// sink's link, each other name of allNames is not the sink's link.
func (f *File) checkLinks(d *dirHandle, b *bundle.Bundle) error {
	want, drop := f.split(kindOf(b))
	for _, n := range want {
		k, err := visibleKind(d, n)
		if err != nil {
			return err
		}
		switch k {
		case linkForeign:
			return foreignError(d, n)
		case linkAbsent:
			return fmt.Errorf("%s: %w: %s is missing", f, bundle.ErrInvalid, d.join(n))
		}
	}
	for _, n := range drop {
		k, err := visibleKind(d, n)
		if err != nil {
			return err
		}
		if k == linkOurs {
			return fmt.Errorf("%s: %w: stale %s (the current files do not include it)", f, bundle.ErrInvalid, d.join(n))
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
