package sinks

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// This file holds the descriptor-relative file operations the sink is built on. Every
// name passed here is a single path element inside an open directory, and every open
// uses O_NOFOLLOW, so no operation ever follows a symlink: a symlink in the way makes
// the call fail (ELOOP) instead of being written through.

// maxFileSize bounds what is read back from one file; credential PEM files are a few KiB.
const maxFileSize = 1 << 20

// dirHandle is an open directory, the anchor for *at system calls.
type dirHandle struct {
	fd   int
	path string // absolute path, for messages only
}

// openDirPath opens an absolute directory path without following a symlink in its last
// element.
func openDirPath(path string) (*dirHandle, error) {
	return openDirAt(unix.AT_FDCWD, path, path)
}

// openDirAt opens the directory name relative to parent; path names it in errors.
func openDirAt(parent int, name, path string) (*dirHandle, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open directory", Path: path, Err: err}
	}
	return &dirHandle{fd: fd, path: path}, nil
}

// sub opens the child directory name.
func (d *dirHandle) sub(name string) (*dirHandle, error) {
	return openDirAt(d.fd, name, d.join(name))
}

func (d *dirHandle) close() { _ = unix.Close(d.fd) }

func (d *dirHandle) join(name string) string { return filepath.Join(d.path, name) }

func (d *dirHandle) pathErr(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: d.join(name), Err: err}
}

// sync fsyncs the directory, making entries created or renamed in it durable.
func (d *dirHandle) sync() error {
	if err := retryEINTR(func() error { return unix.Fsync(d.fd) }); err != nil {
		return &fs.PathError{Op: "fsync", Path: d.path, Err: err}
	}
	return nil
}

// chmod sets the directory's own mode through its descriptor.
func (d *dirHandle) chmod(mode os.FileMode) error {
	if err := retryEINTR(func() error { return unix.Fchmod(d.fd, uint32(mode.Perm())) }); err != nil {
		return &fs.PathError{Op: "chmod", Path: d.path, Err: err}
	}
	return nil
}

// lstat describes name without following it. ok is false (and err nil) when name does
// not exist.
func (d *dirHandle) lstat(name string) (st unix.Stat_t, ok bool, err error) {
	err = retryEINTR(func() error { return unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	if err != nil {
		return st, false, d.pathErr("lstat", name, err)
	}
	return st, true, nil
}

// readlink returns the target of the symlink name.
func (d *dirHandle) readlink(name string) (string, error) {
	buf := make([]byte, 256)
	for {
		var n int
		err := retryEINTR(func() (err error) { n, err = unix.Readlinkat(d.fd, name, buf); return err })
		if err != nil {
			return "", d.pathErr("readlink", name, err)
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// names lists the directory's entries.
func (d *dirHandle) names() ([]string, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open directory", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// createFile creates name exclusively (never through an existing file or symlink), sets
// owner and exact mode on the descriptor before any data is written, writes data and
// fsyncs it. uid/gid of -1 leave that id as created.
func (d *dirHandle) createFile(name string, data []byte, mode os.FileMode, uid, gid int) (err error) {
	var fd int
	err = retryEINTR(func() (err error) {
		fd, err = unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return d.pathErr("create", name, err)
	}
	// The raw descriptor, not an *os.File: a first write creates five files, and on a
	// virtual machine every system call counts (os.NewFile adds one per file).
	defer func() {
		if cerr := unix.Close(fd); err == nil && cerr != nil {
			err = d.pathErr("close", name, cerr)
		}
	}()
	if err := d.setOwnerMode(fd, name, mode, uid, gid); err != nil {
		return err
	}
	for rest := data; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return d.pathErr("write", name, err)
		case n == 0:
			return d.pathErr("write", name, io.ErrShortWrite)
		}
		rest = rest[n:]
	}
	if err := retryEINTR(func() error { return unix.Fsync(fd) }); err != nil {
		return d.pathErr("fsync", name, err)
	}
	return nil
}

// fixOwnerMode re-applies owner and mode to the existing regular file name, through a
// descriptor, when they differ. It reports whether anything was changed.
func (d *dirHandle) fixOwnerMode(name string, mode os.FileMode, uid, gid int) (bool, error) {
	f, err := d.openRegular(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Fstat(int(f.Fd()), &st) }); err != nil {
		return false, d.pathErr("stat", name, err)
	}
	ownerOK := (uid == -1 || int(st.Uid) == uid) && (gid == -1 || int(st.Gid) == gid)
	cur := os.FileMode(st.Mode & 0o7777)
	if ownerOK && cur == mode {
		return false, nil
	}
	if narrow := cur & mode; !ownerOK && narrow != cur {
		// Narrow the bits first: the new owner or group must never see the old, wider
		// mode (0640 group a to 0600 group b must not be 0640 group b for a moment).
		if err := retryEINTR(func() error { return unix.Fchmod(int(f.Fd()), uint32(narrow.Perm())) }); err != nil {
			return true, d.pathErr("chmod", name, err)
		}
	}
	return true, d.setOwnerMode(int(f.Fd()), name, mode, uid, gid)
}

// setOwnerMode applies owner (first, so the group is final before group bits appear) and
// then the exact mode (permission bits), ignoring the umask, on fd, the open file name.
func (d *dirHandle) setOwnerMode(fd int, name string, mode os.FileMode, uid, gid int) error {
	if uid != -1 || gid != -1 {
		if err := retryEINTR(func() error { return unix.Fchown(fd, uid, gid) }); err != nil {
			return d.pathErr("chown", name, err)
		}
	}
	if err := retryEINTR(func() error { return unix.Fchmod(fd, uint32(mode.Perm())) }); err != nil {
		return d.pathErr("chmod", name, err)
	}
	return nil
}

// openRegular opens name for reading, refusing symlinks, FIFOs, devices and directories.
func (d *dirHandle) openRegular(name string) (*os.File, error) {
	var fd int
	err := retryEINTR(func() (err error) {
		fd, err = unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, d.pathErr("open", name, err)
	}
	var st unix.Stat_t
	if err := retryEINTR(func() error { return unix.Fstat(fd, &st) }); err != nil {
		_ = unix.Close(fd)
		return nil, d.pathErr("stat", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s is not a regular file", d.join(name))
	}
	return os.NewFile(uintptr(fd), d.join(name)), nil
}

// readFile reads the regular file name, at most maxFileSize bytes.
func (d *dirHandle) readFile(name string) ([]byte, error) {
	f, err := d.openRegular(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", d.join(name), maxFileSize)
	}
	return data, nil
}

// symlink creates name as a symlink with the given (relative) target.
func (d *dirHandle) symlink(target, name string) error {
	if err := unix.Symlinkat(target, d.fd, name); err != nil {
		return d.pathErr("symlink", name, err)
	}
	return nil
}

// rename atomically replaces newName with oldName, both in d.
func (d *dirHandle) rename(oldName, newName string) error {
	if err := unix.Renameat(d.fd, oldName, d.fd, newName); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(oldName), New: d.join(newName), Err: err}
	}
	return nil
}

// unlink removes the non-directory name; a missing name is not an error.
func (d *dirHandle) unlink(name string) error {
	err := retryEINTR(func() error { return unix.Unlinkat(d.fd, name, 0) }) // a retry after it took effect: ENOENT
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return d.pathErr("remove", name, err)
	}
	return nil
}

// removeAll removes name and, when it is a directory, everything below it. It never
// follows symlinks: a symlink is removed itself. A missing name is not an error.
func (d *dirHandle) removeAll(name string) error {
	st, ok, err := d.lstat(name)
	if err != nil || !ok {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return d.unlink(name)
	}
	sub, err := d.sub(name)
	if err != nil {
		return err
	}
	children, err := sub.names()
	for _, c := range children {
		if err == nil {
			err = sub.removeAll(c)
		}
	}
	sub.close()
	if err != nil {
		return err
	}
	if err := retryEINTR(func() error { return unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR) }); err != nil && !errors.Is(err, unix.ENOENT) {
		return d.pathErr("remove", name, err)
	}
	return nil
}

// retryEINTR runs op again while it fails with EINTR (which network and FUSE file
// systems can return when a signal, such as the Go runtime's preemption signal, arrives
// during the call). Used for calls that are safe to repeat; mkdirat, symlinkat and
// renameat are not retried (a repeat of one that took effect fails with EEXIST or
// ENOENT), and commit checks what its rename did.
func retryEINTR(op func() error) error {
	for {
		if err := op(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
