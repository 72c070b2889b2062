package config

import (
	"fmt"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// maxFileFuncSize caps what file() reads.
const maxFileFuncSize = 1 << 20

// evalContext offers the functions a config may call: env(name) and file(path).
// file() resolves relative paths against baseDir.
func evalContext(baseDir string, lookupEnv func(string) (string, bool), readFile func(string, int64) ([]byte, error)) *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{
			"env":  envFunc(lookupEnv),
			"file": fileFunc(baseDir, readFile),
		},
	}
}

func envFunc(lookupEnv func(string) (string, bool)) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the value of an environment variable; an unset variable is an error.",
		Params:      []function.Parameter{{Name: "name", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		RefineResult: func(b *cty.RefinementBuilder) *cty.RefinementBuilder {
			return b.NotNull()
		},
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			name := args[0].AsString()
			v, ok := lookupEnv(name)
			if !ok {
				return cty.UnknownVal(cty.String), fmt.Errorf("environment variable %q is not set", name)
			}
			return cty.StringVal(v), nil
		},
	})
}

func fileFunc(baseDir string, readFile func(string, int64) ([]byte, error)) function.Function {
	return function.New(&function.Spec{
		Description: "Returns the contents of a file (at most 1 MiB), relative to the config file's directory.",
		Params:      []function.Parameter{{Name: "path", Type: cty.String}},
		Type:        function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if !filepath.IsAbs(p) {
				p = filepath.Join(baseDir, p)
			}
			data, err := readFile(p, maxFileFuncSize)
			if err != nil {
				return cty.UnknownVal(cty.String), err
			}
			if len(data) > maxFileFuncSize {
				return cty.UnknownVal(cty.String), fmt.Errorf("%s is larger than 1 MiB", p)
			}
			return cty.StringVal(string(data)), nil
		},
	})
}
