package hook

import "syscall"

// setDeathSignal has the kernel SIGKILL the hook if the agent's thread that
// started it dies.
func setDeathSignal(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
