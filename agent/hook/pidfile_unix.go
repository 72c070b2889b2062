//go:build unix

package hook

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

const (
	sigUSR1  = syscall.SIGUSR1
	sigUSR2  = syscall.SIGUSR2
	sigCONT  = syscall.SIGCONT
	sigSTOP  = syscall.SIGSTOP
	sigTSTP  = syscall.SIGTSTP
	sigWINCH = syscall.SIGWINCH
	sigTTIN  = syscall.SIGTTIN
	sigTTOU  = syscall.SIGTTOU
)

// readPIDFile returns the pid in path and the file's owner uid. Missing and
// empty files give errors wrapping errNotYet.
func readPIDFile(path string) (pid, owner int, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, 0, fmt.Errorf("pid file %s does not exist: %w", path, errNotYet)
		}
		return 0, 0, err
	}
	if err := checkPIDFileInfo(path, fi); err != nil {
		return 0, 0, err
	}
	// O_NOFOLLOW: the file cannot be swapped for a symlink after the Lstat;
	// O_NONBLOCK: a FIFO put there cannot hang us.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return 0, 0, fmt.Errorf("pid file %s does not exist: %w", path, errNotYet)
		case errors.Is(err, syscall.ELOOP):
			return 0, 0, symlinkError(path)
		}
		return 0, 0, err
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if err := checkPIDFileInfo(path, fi); err != nil {
		return 0, 0, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPIDFileSize+1))
	if err != nil {
		return 0, 0, fmt.Errorf("reading pid file %s: %w", path, err)
	}
	if len(b) > maxPIDFileSize {
		return 0, 0, fmt.Errorf("pid file %s is longer than %d bytes; it must hold one pid", path, maxPIDFileSize)
	}
	pid, err = parsePID(path, b)
	if err != nil {
		return 0, 0, err
	}
	owner = -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = int(st.Uid)
	}
	return pid, owner, nil
}

func symlinkError(path string) error {
	return fmt.Errorf("pid file %s is a symbolic link; refusing to follow it (point pid_file at the real file)", path)
}

// checkPIDFileInfo refuses anything but a regular file that only its owner
// can write: anyone else who can write it could aim our signal anywhere.
func checkPIDFileInfo(path string, fi fs.FileInfo) error {
	m := fi.Mode()
	switch {
	case m&fs.ModeSymlink != 0:
		return symlinkError(path)
	case !m.IsRegular():
		return fmt.Errorf("pid file %s is not a regular file (%s); refusing", path, m.Type())
	case m.Perm()&0o022 != 0:
		return fmt.Errorf("pid file %s is group- or world-writable (mode %04o), so another user could aim the signal at any process; refusing (chmod go-w %s)", path, m.Perm(), path)
	}
	return nil
}
