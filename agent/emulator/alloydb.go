package emulator

import "net/http"

// alloyState is the emulator's AlloyDB state (guarded by Emulator.mu).
type alloyState struct{}

// serveAlloyDB handles AlloyDB Admin API requests; false means "not mine".
func (e *Emulator) serveAlloyDB(w http.ResponseWriter, r *http.Request) bool { return false }
