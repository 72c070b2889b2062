package agent

import (
	"github.com/dbcert-agent/dbcert-agent/config"
	"github.com/dbcert-agent/dbcert-agent/sinks"
)

// OpenFileSink opens file sink cs of instance ci with the options the agent writes it
// with, for readers of the files on disk such as verify.
func OpenFileSink(ci *config.Instance, cs config.FileSink) (*sinks.File, error) {
	return newFileSink(cs)
}
