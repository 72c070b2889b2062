//go:build unix

package hook

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// trapper starts a shell that appends "got" to a file on SIGHUP and returns
// its pid and the file.
func trapper(t *testing.T) (int, string) {
	t.Helper()
	dir := t.TempDir()
	got, ready := filepath.Join(dir, "got"), filepath.Join(dir, "ready")
	cmd := exec.Command("/bin/sh", "-c", `trap 'echo got >> "$GOT"' HUP; echo > "$READY"; while :; do sleep 0.05; done`)
	cmd.Env = append(os.Environ(), "GOT="+got, "READY="+ready)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("trapper did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd.Process.Pid, got
}

func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if string(b) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q", path, b, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writePID(t *testing.T, path string, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestSignalDelivered(t *testing.T) {
	pid, got := trapper(t)
	pf := filepath.Join(t.TempDir(), "app.pid")
	writePID(t, pf, strconv.Itoa(pid)+"\n", 0o644)
	h, err := NewSignal(SignalOptions{PIDFile: pf})
	if err != nil {
		t.Fatal(err)
	}
	if want := "signal SIGHUP to the pid in " + pf; h.String() != want {
		t.Errorf("String() = %q, want %q", h.String(), want)
	}
	if err := h.Run(context.Background(), testEvent); err != nil {
		t.Fatal(err)
	}
	waitFile(t, got, "got\n")
	if err := h.Run(context.Background(), testEvent); err != nil {
		t.Fatal(err)
	}
	waitFile(t, got, "got\ngot\n")
}

func TestSignalPIDFileAppearsLate(t *testing.T) {
	pid, got := trapper(t)
	pf := filepath.Join(t.TempDir(), "app.pid")
	h, err := NewSignal(SignalOptions{PIDFile: pf, WaitMissing: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		// Written the way daemons do it: empty first, then the pid.
		os.WriteFile(pf, nil, 0o644)
		time.Sleep(50 * time.Millisecond)
		os.WriteFile(pf, []byte(strconv.Itoa(pid)), 0o644)
	}()
	start := time.Now()
	if err := h.Run(context.Background(), testEvent); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("returned after %v, before the file existed", d)
	}
	waitFile(t, got, "got\n")
}

func TestSignalErrors(t *testing.T) {
	alive, _ := trapper(t)
	dead := deadPID(t)
	tests := []struct {
		name    string
		setup   func(t *testing.T, pf string)
		want    []string
		maxTime time.Duration
	}{
		{
			name:    "missing",
			setup:   func(t *testing.T, pf string) {},
			want:    []string{"does not exist", "waited 300ms"},
			maxTime: 2 * time.Second,
		},
		{
			name:  "empty",
			setup: func(t *testing.T, pf string) { writePID(t, pf, "\n", 0o644) },
			want:  []string{"is empty", "waited 300ms"},
		},
		{
			name:    "garbage",
			setup:   func(t *testing.T, pf string) { writePID(t, pf, "12abc\n", 0o644) },
			want:    []string{"does not hold a single decimal pid"},
			maxTime: 100 * time.Millisecond,
		},
		{
			name:  "two pids",
			setup: func(t *testing.T, pf string) { writePID(t, pf, "123\n456\n", 0o644) },
			want:  []string{"does not hold a single"},
		},
		{
			name:  "negative",
			setup: func(t *testing.T, pf string) { writePID(t, pf, "-5", 0o644) },
			want:  []string{"does not hold a single decimal pid"},
		},
		{
			name:  "pid 1",
			setup: func(t *testing.T, pf string) { writePID(t, pf, "1\n", 0o644) },
			want:  []string{"pid 1", "not a valid target"},
		},
		{
			name:  "too long",
			setup: func(t *testing.T, pf string) { writePID(t, pf, strings.Repeat(" ", 40)+"12", 0o644) },
			want:  []string{"longer than 32 bytes"},
		},
		{
			name: "symlink",
			setup: func(t *testing.T, pf string) {
				real := pf + ".real"
				writePID(t, real, strconv.Itoa(alive), 0o644)
				if err := os.Symlink(real, pf); err != nil {
					t.Fatal(err)
				}
			},
			want:    []string{"symbolic link", "refusing"},
			maxTime: 100 * time.Millisecond,
		},
		{
			name:  "world-writable",
			setup: func(t *testing.T, pf string) { writePID(t, pf, strconv.Itoa(alive), 0o666) },
			want:  []string{"group- or world-writable", "0666"},
		},
		{
			name:  "group-writable",
			setup: func(t *testing.T, pf string) { writePID(t, pf, strconv.Itoa(alive), 0o620) },
			want:  []string{"group- or world-writable"},
		},
		{
			name: "directory",
			setup: func(t *testing.T, pf string) {
				if err := os.Mkdir(pf, 0o755); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"not a regular file"},
		},
		{
			name:  "not running",
			setup: func(t *testing.T, pf string) { writePID(t, pf, strconv.Itoa(dead)+"\n", 0o644) },
			want:  []string{fmt.Sprintf("pid %d from", dead), "is not running"},
		},
		{
			name:  "the agent itself",
			setup: func(t *testing.T, pf string) { writePID(t, pf, strconv.Itoa(os.Getpid()), 0o644) },
			want:  []string{"the agent itself"},
		},
	}
	if os.Geteuid() == 0 {
		tests = append(tests, struct {
			name    string
			setup   func(t *testing.T, pf string)
			want    []string
			maxTime time.Duration
		}{
			name: "owned by another user, naming a root process",
			setup: func(t *testing.T, pf string) {
				writePID(t, pf, strconv.Itoa(alive), 0o644)
				if err := os.Chown(pf, 54321, 54321); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"does not run as uid 54321"},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pf := filepath.Join(t.TempDir(), "app.pid")
			tt.setup(t, pf)
			h, err := NewSignal(SignalOptions{PIDFile: pf, WaitMissing: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = h.Run(context.Background(), testEvent)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tt.want, pf) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if tt.maxTime > 0 && time.Since(start) > tt.maxTime {
				t.Errorf("took %v, want < %v", time.Since(start), tt.maxTime)
			}
		})
	}
}

func TestSignalCanceledWhileWaiting(t *testing.T) {
	h, err := NewSignal(SignalOptions{PIDFile: filepath.Join(t.TempDir(), "x.pid"), WaitMissing: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = h.Run(ctx, testEvent)
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || time.Since(start) > 2*time.Second {
		t.Errorf("err = %v after %v", err, time.Since(start))
	}
}

func TestNewSignal(t *testing.T) {
	if _, err := NewSignal(SignalOptions{}); err == nil {
		t.Error("empty pid_file accepted")
	}
	if _, err := NewSignal(SignalOptions{PIDFile: "run/x.pid"}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative pid_file: err = %v", err)
	}
	h, err := NewSignal(SignalOptions{PIDFile: "/run/x.pid"})
	if err != nil {
		t.Fatal(err)
	}
	if h.sig != syscall.SIGHUP || h.wait != DefaultWaitMissing {
		t.Errorf("defaults: %+v", h)
	}
	h, err = NewSignal(SignalOptions{PIDFile: "/run/x.pid", Signal: syscall.SIGUSR2})
	if err != nil || h.String() != "signal SIGUSR2 to the pid in /run/x.pid" {
		t.Errorf("%v %v", h, err)
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"SIGHUP", syscall.SIGHUP, true},
		{"HUP", syscall.SIGHUP, true},
		{"hup", syscall.SIGHUP, true},
		{"sigusr1", syscall.SIGUSR1, true},
		{"SigUsr2", syscall.SIGUSR2, true},
		{" SIGTERM ", syscall.SIGTERM, true},
		{"INT", syscall.SIGINT, true},
		{"QUIT", syscall.SIGQUIT, true},
		{"WINCH", syscall.SIGWINCH, true},
		{"KILL", syscall.SIGKILL, true},
		{"", 0, false},
		{"SIG", 0, false},
		{"1", 0, false},
		{"SIGFOO", 0, false},
		{"HUPP", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSignal(tt.in)
		if tt.ok {
			if err != nil || got != tt.want {
				t.Errorf("ParseSignal(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseSignal(%q) = %v, want error", tt.in, got)
		} else if !strings.Contains(err.Error(), "SIGHUP") || !strings.Contains(err.Error(), "SIGUSR1") {
			t.Errorf("error %q does not list valid names", err)
		}
	}
}

func TestParsePID(t *testing.T) {
	for in, want := range map[string]int{"1234": 1234, "1234\n": 1234, "77 \r\n": 77, "4194304": 4194304} {
		if got, err := parsePID("f", []byte(in)); err != nil || got != want {
			t.Errorf("parsePID(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{" 12", "+12", "0", "1", "4194305", "12 13", "0x10", "１２"} {
		if got, err := parsePID("f", []byte(in)); err == nil {
			t.Errorf("parsePID(%q) = %d, want error", in, got)
		}
	}
}

// FuzzParsePID: parsePID never panics, and what it accepts is exactly one decimal pid
// in 2..maxPID, optionally followed by white space.
func FuzzParsePID(f *testing.F) {
	for _, s := range []string{"1234", "1234\n", "77 \r\n", "4194304", "4194305", "0", "1", "", " 12", "+12", "-5", "12 13", "0x10", "１２", "00012", "\n", "9999999", "12\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pid, err := parsePID("f", b)
		if err != nil {
			if pid != 0 {
				t.Fatalf("error %v with pid %d", err, pid)
			}
			return
		}
		if pid <= 1 || pid > maxPID {
			t.Fatalf("accepted pid %d from %q", pid, b)
		}
		digits := strings.TrimRight(string(b), " \t\r\n")
		if strings.TrimLeft(digits, "0") != strconv.Itoa(pid) {
			t.Fatalf("parsed %q as %d", b, pid)
		}
	})
}
