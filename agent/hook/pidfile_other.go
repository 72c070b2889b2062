//go:build !unix

package hook

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

const (
	sigUSR1, sigUSR2, sigCONT, sigSTOP, sigTSTP, sigWINCH, sigTTIN, sigTTOU = 0, 0, 0, 0, 0, 0, 0, 0
)

func readPIDFile(path string) (pid, owner int, err error) {
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, 0, fmt.Errorf("pid file %s does not exist: %w", path, errNotYet)
		}
		return 0, 0, err
	}
	if !fi.Mode().IsRegular() {
		return 0, 0, fmt.Errorf("pid file %s is not a regular file; refusing", path)
	}
	if fi.Size() > maxPIDFileSize {
		return 0, 0, fmt.Errorf("pid file %s is longer than %d bytes; it must hold one pid", path, maxPIDFileSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	pid, err = parsePID(path, b)
	return pid, -1, err
}

func checkOwner(pid, owner int) error { return nil }
