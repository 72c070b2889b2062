//go:build unix && !linux

package hook

import "syscall"

func setDeathSignal(*syscall.SysProcAttr) {}
