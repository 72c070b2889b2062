package huaweiauth

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// maxSecretFile caps what is read from a token, password or secret-key file. Huawei
// tokens are several KB; 64 KiB leaves room.
const maxSecretFile = 64 << 10

// secretFile is a one-value file (token, password, secret key) re-read only when it
// changed (another file at the path, or a new size or mtime). Its errors name the file
// and the attribute, never the content.
type secretFile struct {
	path  string
	fixed string // when set, the value itself (from the environment); path is unused
	what  string // "token_file", "password_file", "secret_key_file"
	// missingRetryable: a missing or empty file is worth retrying (someone else
	// writes it, e.g. a token refresher), rather than a configuration error.
	missingRetryable bool
	// password: keep inner and surrounding spaces (only a final line break is
	// dropped) and allow any printable UTF-8; other values are trimmed and must be
	// visible ASCII.
	password bool

	mu    sync.Mutex
	info  os.FileInfo
	value string
}

// get returns the value, re-reading the file when it changed or when force is set.
func (s *secretFile) get(force bool) (string, error) {
	if s.fixed != "" {
		return s.fixed, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	if err != nil {
		s.info, s.value = nil, ""
		return "", s.errorf(err, s.missingRetryable, "huaweicloud %s: %v", s.what, err)
	}
	if !force && s.info != nil && sameVersion(s.info, fi) {
		return s.value, nil
	}
	v, fi2, err := s.read()
	if err != nil {
		s.info, s.value = nil, ""
		return "", err
	}
	s.info, s.value = fi2, v
	return v, nil
}

func (s *secretFile) read() (string, os.FileInfo, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return "", nil, s.errorf(err, s.missingRetryable, "huaweicloud %s: %v", s.what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", nil, s.errorf(err, s.missingRetryable, "huaweicloud %s: %v", s.what, err)
	}
	if !fi.Mode().IsRegular() {
		return "", nil, s.errorf(nil, false, "huaweicloud %s %s is not a regular file", s.what, s.path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", nil, s.errorf(err, true, "huaweicloud %s %s: %v", s.what, s.path, err)
	}
	if len(b) > maxSecretFile {
		return "", nil, s.errorf(nil, false, "huaweicloud %s %s is larger than %d bytes; it must hold only the secret", s.what, s.path, maxSecretFile)
	}
	v := strings.TrimSpace(string(b))
	if s.password {
		v = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	}
	if v == "" {
		return "", nil, s.errorf(nil, s.missingRetryable, "huaweicloud %s %s is empty; write the secret into it", s.what, s.path)
	}
	if s.password && !printableText(v) {
		return "", nil, s.errorf(nil, false,
			"huaweicloud %s %s holds line breaks or control characters; it must hold only the password (one line)", s.what, s.path)
	}
	if !s.password && !printable(v) {
		return "", nil, s.errorf(nil, false,
			"huaweicloud %s %s holds white space or non-printable characters inside the value; it must hold exactly one value", s.what, s.path)
	}
	return v, fi, nil
}

func (s *secretFile) errorf(cause error, retryable bool, format string, args ...any) error {
	return &credError{msg: fmt.Sprintf(format, args...), retryable: retryable, err: cause}
}

// sameVersion reports whether a and b describe the same, unchanged file.
func sameVersion(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// printable reports whether v can go into an HTTP header or a JSON string without
// surprises: visible ASCII only. (Passwords with spaces inside are not supported.)
func printable(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// printableText reports whether v is valid UTF-8 without control characters.
func printableText(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
