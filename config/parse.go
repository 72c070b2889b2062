package config

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// pieceSize is how many bytes of a configuration parseFile gives HCL's lexer at a time
// (at least; pieces end where top-level blocks end).
const pieceSize = 8 << 10

// parseFile parses src, a file of HCL native syntax; ends are where top-level blocks end
// (from scanFile). cut reports that the file's body was merged from pieces (it then
// has no Nav, which diagnostics use to name the block around a position).
//
// HCL's lexer collects every token of its input in one growing slice: for a file of
// 1,000 instances (200 KB, 60,000 tokens of 96 bytes) that is tens of megabytes
// allocated, copied and scanned by the garbage collector, a third of a fresh process's
// start-up. So a file of at least two pieces is parsed in pieces of at least size bytes
// that end at top-level block ends, each with its true start position (ranges and
// diagnostics point into the whole file), and their bodies are merged; blocks keep
// their order. The ends come from an approximate scan: if a piece fails to parse, a
// cut fell inside something, and the whole file is parsed at once instead. (A cut
// inside a construct always leaves the piece before it unterminated: a piece that
// parses ends at the top level.)
func parseFile(filename string, src []byte, ends []hcl.Pos, size int) (file *hcl.File, diags hcl.Diagnostics, cut bool) {
	if len(src) < 2*size {
		return parseWhole(filename, src)
	}
	// Pieces start at the file's start and at the first block end at least size bytes
	// after the previous start; the last runs to the end of the file.
	starts := []hcl.Pos{hcl.InitialPos}
	for _, end := range ends {
		if end.Byte-starts[len(starts)-1].Byte >= size && end.Byte < len(src) {
			starts = append(starts, end)
		}
	}
	if len(starts) < 2 {
		return parseWhole(filename, src)
	}
	bodies := make([]hcl.Body, len(starts))
	for i, start := range starts {
		stop := len(src)
		if i+1 < len(starts) {
			stop = starts[i+1].Byte
		}
		f, ds := hclsyntax.ParseConfig(src[start.Byte:stop], filename, start)
		if ds.HasErrors() {
			return parseWhole(filename, src)
		}
		bodies[i], diags = f.Body, append(diags, ds...)
	}
	return &hcl.File{Body: hcl.MergeBodies(bodies), Bytes: src}, diags, true
}

func parseWhole(filename string, src []byte) (*hcl.File, hcl.Diagnostics, bool) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	return f, diags, false
}
