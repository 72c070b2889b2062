package sinks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Reserved names in the sink directory. Every name starting with ".." belongs to the sink.
const (
	dataLink    = "..data"     // symlink to the current generation: the commit point
	dataTmpLink = "..data_tmp" // the next ..data, renamed over it
	lockName    = "..lock"     // flock(2) file serialising writers
)

// genTimeLayout is the UTC timestamp in generation names. Fixed width, so names sort in
// creation order.
const genTimeLayout = "2006_01_02_15_04_05.000000000"

// genPattern matches generation directory names: "..<UTC timestamp>.<8 hex digits>".
var genPattern = regexp.MustCompile(`^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{9}\.[0-9a-f]{8}$`)

// lockPoll is how often Write retries a lock another process holds.
const lockPoll = 20 * time.Millisecond

func isGeneration(name string) bool { return genPattern.MatchString(name) }

// generationTime is when a generation was written, from its name (zero if unparsable).
func generationTime(name string) time.Time {
	if !isGeneration(name) {
		return time.Time{}
	}
	t, err := time.Parse(genTimeLayout, name[2:2+len(genTimeLayout)])
	if err != nil {
		return time.Time{}
	}
	return t
}

// mkGeneration creates a new, empty generation directory (mode 0700 until it is
// complete) with exclusive-create semantics and returns its name.
func mkGeneration(d *dirHandle, now time.Time) (string, error) {
	var rnd [4]byte
	for range 100 {
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", err
		}
		name := ".." + now.UTC().Format(genTimeLayout) + "." + hex.EncodeToString(rnd[:])
		err := unix.Mkdirat(d.fd, name, 0o700)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", d.pathErr("mkdir", name, err)
		}
	}
	return "", fmt.Errorf("creating a generation directory in %s: too many name collisions", d.path)
}

// dataState is what ..data says about the current generation.
type dataState struct {
	gen    string // generation ..data points at; "" when there is no ..data
	exists bool   // the generation directory exists
}

// readData reads and validates ..data. It refuses (error) anything the sink did not
// create: a ..data that is not a symlink, or whose target is not a generation name, or
// whose target exists but is not a real directory.
func readData(d *dirHandle) (dataState, error) {
	st, ok, err := d.lstat(dataLink)
	if err != nil || !ok {
		return dataState{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return dataState{}, fmt.Errorf("refusing %s: it is not a symlink the agent created; remove it", d.join(dataLink))
	}
	gen, err := d.readlink(dataLink)
	if err != nil {
		return dataState{}, err
	}
	if !isGeneration(gen) {
		return dataState{}, fmt.Errorf("refusing %s: it points to %q, not to a generation directory the agent created", d.join(dataLink), gen)
	}
	st, ok, err = d.lstat(gen)
	if err != nil || !ok {
		return dataState{gen: gen}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return dataState{}, fmt.Errorf("refusing %s: %s is not a directory", d.join(dataLink), d.join(gen))
	}
	return dataState{gen: gen, exists: true}, nil
}

// linkKind classifies a visible name.
type linkKind int

const (
	linkAbsent  linkKind = iota // does not exist
	linkOurs                    // a symlink to ..data/<name>, as the sink creates it
	linkForeign                 // anything else: not the sink's, never touched
)

func linkTarget(name string) string { return dataLink + "/" + name }

// visibleKind classifies the visible name.
func visibleKind(d *dirHandle, name string) (linkKind, error) {
	st, ok, err := d.lstat(name)
	if err != nil || !ok {
		return linkAbsent, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return linkForeign, nil
	}
	target, err := d.readlink(name)
	if err != nil {
		return linkAbsent, err
	}
	if target != linkTarget(name) {
		return linkForeign, nil
	}
	return linkOurs, nil
}

// ErrForeign is wrapped by the refusal (from Write and Current) when a name the sink
// writes exists and is not the sink's own symlink: a file someone else put there. The
// agent never overwrites or deletes it; only moving it away helps, so a retry does not.
var ErrForeign = errors.New("a file the agent did not create is in the way")

// foreignError is the refusal for a visible name the sink did not create.
func foreignError(d *dirHandle, name string) error {
	return fmt.Errorf("refusing to write %s: it exists and is not the agent's symlink to %s (%w); the agent does not overwrite or delete files it did not create — move it away",
		d.join(name), linkTarget(name), ErrForeign)
}

// checkVisible refuses when any of names is foreign.
func checkVisible(d *dirHandle, names []string) error {
	for _, n := range names {
		k, err := visibleKind(d, n)
		if err != nil {
			return err
		}
		if k == linkForeign {
			return foreignError(d, n)
		}
	}
	return nil
}

// repairLinks creates the missing visible links in want and removes the sink's own links
// in drop (foreign entries in drop are left alone); listed are d's entries, read under
// the lock after the commit, so only names listed need a look (a name that appeared
// since makes the symlink fail, and the next Write repairs it). It reports whether it
// changed anything. Links are created only after ..data exists, so none ever dangles.
func repairLinks(d *dirHandle, listed, want, drop []string) (changed bool, err error) {
	for _, n := range want {
		k := linkAbsent
		if slices.Contains(listed, n) {
			if k, err = visibleKind(d, n); err != nil {
				return changed, err
			}
		}
		switch k {
		case linkForeign:
			return changed, foreignError(d, n)
		case linkAbsent:
			if err := d.symlink(linkTarget(n), n); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	for _, n := range drop {
		if !slices.Contains(listed, n) {
			continue
		}
		k, err := visibleKind(d, n)
		if err != nil {
			return changed, err
		}
		if k == linkOurs {
			if err := d.unlink(n); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	return changed, nil
}

// prune removes every generation directory among listed (d's entries) not in keep, and a
// stale ..data_tmp symlink.
func prune(d *dirHandle, listed []string, keep ...string) error {
	for _, n := range listed {
		switch {
		case n == dataTmpLink:
			st, ok, err := d.lstat(n)
			if err != nil {
				return err
			}
			if ok && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				if err := d.unlink(n); err != nil {
					return err
				}
			}
		case isGeneration(n) && !slices.Contains(keep, n):
			if err := d.removeAll(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// previousOf returns the newest generation among listed (d's entries) whose name sorts
// before current (the one the last rotation replaced), or "".
func previousOf(listed []string, current string) string {
	prev := ""
	for _, n := range listed {
		if isGeneration(n) && n < current && n > prev {
			prev = n
		}
	}
	return prev
}

// commit points ..data at gen with one atomic rename of a fresh ..data_tmp symlink.
// Nothing is visible to readers until the rename succeeds. A rename can take effect and
// still report an error (a retransmitted NFS request answered ENOENT, an interrupted
// FUSE call): when ..data then names gen, the commit happened and commit returns nil,
// so the caller keeps gen instead of removing what ..data points to. hook, when set
// (tests only), runs as "renamed" right after the rename and its error is taken as the
// rename's.
func commit(d *dirHandle, gen string, hook func(step string) error) error {
	st, ok, err := d.lstat(dataTmpLink)
	if err != nil {
		return err
	}
	if ok {
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return fmt.Errorf("refusing %s: it is not a symlink the agent created; remove it", d.join(dataTmpLink))
		}
		if err := d.unlink(dataTmpLink); err != nil {
			return err
		}
	}
	if err := d.symlink(gen, dataTmpLink); err != nil {
		return err
	}
	err = d.rename(dataTmpLink, dataLink)
	if err == nil && hook != nil {
		err = hook("renamed")
	}
	if err != nil {
		if now, rerr := d.readlink(dataLink); rerr == nil && now == gen {
			return nil
		}
		_ = d.unlink(dataTmpLink)
		return &renameError{err}
	}
	return nil
}

// renameError is commit's error once its rename was tried: ..data may name the new
// generation although a lookup says otherwise (an NFS client can answer from its
// cache), so the caller keeps that generation; the next Write prunes it unless current.
type renameError struct{ err error }

func (e *renameError) Error() string { return e.err.Error() }
func (e *renameError) Unwrap() error { return e.err }

// lockFile opens (creating if needed) the lock file in d. O_NONBLOCK keeps a planted
// FIFO from hanging the open; O_NOFOLLOW refuses a planted symlink. The file is 0600
// (an existing one is narrowed to that, best effort): flock needs only a read-only
// descriptor, so a lock file others can open is one any local user could hold to stop
// every rotation.
func lockFile(d *dirHandle) (int, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(d.fd, lockName, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, lockMode)
		return err
	})
	if err != nil {
		return -1, d.pathErr("open lock file", lockName, err)
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&0o777 != lockMode {
		_ = unix.Fchmod(fd, lockMode) // not ours to change (root's): still usable
	}
	return fd, nil
}

// lockMode is the lock file's mode: only the agent's user may open it.
const lockMode = 0o600

// lockCtx takes an exclusive flock on d/..lock, polling while another process holds it,
// until ctx is done.
func lockCtx(ctx context.Context, d *dirHandle) (unlock func(), err error) {
	fd, err := lockFile(d)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(fd, unix.LOCK_UN); _ = unix.Close(fd) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = unix.Close(fd)
			return nil, d.pathErr("lock", lockName, err)
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = unix.Close(fd)
			return nil, fmt.Errorf("waiting for the lock %s: %w", d.join(lockName), ctx.Err())
		case <-t.C:
		}
	}
}
