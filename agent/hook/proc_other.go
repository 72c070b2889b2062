//go:build !unix

package hook

import (
	"os/exec"
	"syscall"
)

// Without process groups only the command itself can be stopped.
func setProcAttr(*exec.Cmd) {}

func signalGroup(cmd *exec.Cmd, _ syscall.Signal) error {
	if cmd.Process == nil {
		return nil
	}
	return cmd.Process.Kill()
}
