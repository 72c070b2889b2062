//go:build !unix

package sdnotify

func monotonicUsec() (uint64, bool) { return 0, false }
