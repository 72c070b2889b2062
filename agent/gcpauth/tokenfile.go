package gcpauth

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

const (
	// tokenFileExpiry is the expiry given to tokens read from a token file,
	// whose real expiry is unknown, so that caching callers ask again soon.
	tokenFileExpiry = time.Minute

	// maxTokenFileSize caps what is read from a token file.
	maxTokenFileSize = 64 << 10
)

// fileTokenSource serves the bearer token held in a file, re-reading the file
// only when it changed (another file at the path, size or mtime).
type fileTokenSource struct {
	path string

	mu    sync.Mutex
	info  os.FileInfo // of the file the cached token came from
	token string
}

func newFileTokenSource(path string) *fileTokenSource {
	return &fileTokenSource{path: path}
}

func (s *fileTokenSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, fmt.Errorf("google token_file: %w", err)
	}
	if s.info == nil || !sameVersion(s.info, fi) {
		tok, fi2, err := readTokenFile(s.path)
		if err != nil {
			s.info, s.token = nil, ""
			return nil, err
		}
		s.info, s.token = fi2, tok
	}
	return &oauth2.Token{
		AccessToken: s.token,
		TokenType:   "Bearer",
		Expiry:      time.Now().Add(tokenFileExpiry),
	}, nil
}

// sameVersion reports whether a and b describe the same, unchanged file.
func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// readTokenFile reads and checks the token. Errors never contain the token.
func readTokenFile(path string) (string, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("google token_file: %w", err)
	}
	defer f.Close()
	// Stat the open file, so the cached identity matches what was read.
	fi, err := f.Stat()
	if err != nil {
		return "", nil, fmt.Errorf("google token_file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", nil, fmt.Errorf("google token_file %s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileSize+1))
	if err != nil {
		return "", nil, fmt.Errorf("google token_file: %w", err)
	}
	if len(b) > maxTokenFileSize {
		return "", nil, fmt.Errorf("google token_file %s is larger than %d bytes; it must hold only an access token", path, maxTokenFileSize)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", nil, fmt.Errorf("google token_file %s is empty; whoever keeps the token fresh has not written it yet", path)
	}
	if err := checkTokenChars(tok); err != nil {
		return "", nil, fmt.Errorf("google token_file %s: %w", path, err)
	}
	return tok, fi, nil
}

// checkTokenChars rejects values that cannot be sent in an HTTP header
// (so net/http never has to complain about, or echo, the value).
func checkTokenChars(tok string) error {
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c <= ' ' || c >= 0x7f {
			return errors.New("the token contains white space or non-printable characters; the file must hold exactly one access token")
		}
	}
	return nil
}

// reset is a no-op: the file is read again whenever it changes, so after a 401 the
// transport retries only when someone has written a new token meanwhile.
func (s *fileTokenSource) reset(string) {}
