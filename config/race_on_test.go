//go:build race

package config

// raceDetector: the race detector slows parsing several times; the mutation test
// keeps its case count and shrinks its inputs.
const raceDetector = true
