package emulator

import "net/http"

// huaweiState is the emulator's Huawei Cloud state: IAM tokens and GeminiDB instances
// (guarded by Emulator.mu).
type huaweiState struct{}

// serveHuawei handles Huawei IAM and GeminiDB requests; false means "not mine".
func (e *Emulator) serveHuawei(w http.ResponseWriter, r *http.Request) bool { return false }
