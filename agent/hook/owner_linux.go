package hook

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// checkOwner: a pid file owned by someone other than root or the agent's
// user may only name a process running as that owner (real, effective or
// saved uid), so a service account cannot aim the agent's signal at another
// user's processes.
func checkOwner(pid, owner int) error {
	if owner < 0 || owner == 0 || owner == os.Geteuid() {
		return nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		// Gone already: the signal will say "not running".
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Uid:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		for i := 0; i < len(f) && i < 3; i++ {
			if uid, err := strconv.Atoi(string(f[i])); err == nil && uid == owner {
				return nil
			}
		}
		return fmt.Errorf("pid %d does not run as uid %d, the owner of the pid file; refusing to signal it", pid, owner)
	}
	return nil
}
