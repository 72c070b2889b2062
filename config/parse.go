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
	var bodies []hcl.Body
	start := hcl.InitialPos
	for i, end := range ends {
		if end.Byte-start.Byte < size && i < len(ends)-1 {
			continue
		}
		f, ds := hclsyntax.ParseConfig(src[start.Byte:end.Byte], filename, start)
		if ds.HasErrors() {
			return parseWhole(filename, src)
		}
		bodies, diags = append(bodies, f.Body), append(diags, ds...)
		start = end
	}
	if start.Byte < len(src) {
		f, ds := hclsyntax.ParseConfig(src[start.Byte:], filename, start)
		if ds.HasErrors() {
			return parseWhole(filename, src)
		}
		bodies, diags = append(bodies, f.Body), append(diags, ds...)
	}
	if len(bodies) < 2 {
		return parseWhole(filename, src)
	}
	return &hcl.File{Body: hcl.MergeBodies(bodies), Bytes: src}, diags, true
}

func parseWhole(filename string, src []byte) (*hcl.File, hcl.Diagnostics, bool) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	return f, diags, false
}
