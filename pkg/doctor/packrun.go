package doctor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// maxOutput bounds what is kept of a pack command's output.
const maxOutput = 1 << 20

// pack runs the checks of one pack that applies to the target.
func (r *run) pack(ctx context.Context, p Pack) []CheckResult {
	if !p.Applies(r.t.Type) {
		return nil
	}
	vars := map[string]string{"host": r.host, "port": r.port, "endpoint": r.where(), "type": r.t.Type}
	out := make([]CheckResult, 0, len(p.Checks))
	for _, pc := range p.Checks {
		out = append(out, r.packCheck(ctx, p, pc, vars))
	}
	return out
}

func (r *run) packCheck(ctx context.Context, p Pack, pc PackCheck, vars map[string]string) CheckResult {
	c := CheckResult{Name: "pack:" + p.Name + "/" + pc.ID}
	if pc.Name != "" {
		c.Details = map[string]any{"title": pc.Name}
	}
	argv := make([]string, len(pc.Run.Exec))
	for i, a := range pc.Run.Exec {
		argv[i] = a
		for k, v := range vars {
			if !strings.Contains(a, "{{"+k+"}}") {
				continue
			}
			// A substituted value must not turn into an option or a
			// second argument; a target without it skips the check.
			if !safeOperand(v) {
				c.Status, c.Message = StatusSkip, "not run: the integration has no usable "+k
				return c
			}
		}
		argv[i] = expand(a, vars)
	}
	// Checked again after substitution: the values must not have made
	// an allowed command into another.
	if err := Allowed(argv); err != nil {
		c.Status, c.Message = StatusFail, "refused: "+err.Error()
		return c
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		c.Status, c.Message = StatusSkip, "not run: "+argv[0]+" is not installed where the doctor runs"
		return c
	}
	timeout := r.d.o.Timeout
	if pc.Run.TimeoutSeconds > 0 {
		timeout = time.Duration(pc.Run.TimeoutSeconds) * time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, path, argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C"}
	var stdout, stderr limited
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	start := time.Now()
	runErr := cmd.Run()
	c.DurationMs = ms(time.Since(start))
	exit := -1
	if cmd.ProcessState != nil {
		exit = cmd.ProcessState.ExitCode()
	}
	if c.Details == nil {
		c.Details = map[string]any{}
	}
	c.Details["exitCode"] = exit
	c.Details["argv"] = argv

	switch {
	case cctx.Err() != nil && ctx.Err() == nil:
		c.Status, c.Message = StatusFail, fmt.Sprintf("%s did not finish within %s", argv[0], timeout)
	case runErr != nil && !errors.As(runErr, new(*exec.ExitError)):
		c.Status, c.Message = StatusFail, argv[0]+" could not run: "+runErr.Error()
	default:
		c.Status, c.Message = judge(pc.Parse, pc.re, exit, stdout.Bytes(), stderr.Bytes())
	}
	if c.Status != StatusPass {
		c.Suggestions = pc.Suggestions
		if pc.HowToFix != nil {
			cmds := make([]string, len(pc.HowToFix.Commands))
			for i, s := range pc.HowToFix.Commands {
				cmds[i] = expand(s, vars)
			}
			c.HowToFix = &HowToFix{Summary: pc.HowToFix.Summary, Commands: cmds}
		}
	}
	sum := sha256.Sum256(stdout.Bytes())
	r.ev.add(evidenceLine{Check: c.Name, Probe: "exec", Target: r.where(), Argv: argv, Status: string(c.Status),
		DurationMs: c.DurationMs, Message: c.Message, ExitCode: &exit, OutputBytes: stdout.Len(),
		OutputSHA256: hex.EncodeToString(sum[:])})
	return c
}

// judge applies a check's parse rule. Its messages quote no output: a
// command's output may hold anything, and reports are stored and shown.
//
// A regex is searched in each line of stdout, then of stderr (openssl
// s_client and nc -v report there); a JSON field is read from stdout.
func judge(p *PackParse, re interface{ Match([]byte) bool }, exit int, out, errOut []byte) (Status, string) {
	switch {
	case p == nil:
		if exit == 0 {
			return StatusPass, "exited 0"
		}
		return StatusFail, fmt.Sprintf("exited %d", exit)
	case p.JSON != nil:
		var doc any
		if err := json.Unmarshal(out, &doc); err != nil {
			return StatusFail, "the output is not JSON"
		}
		v, ok := field(doc, p.JSON.Field)
		if !ok {
			return StatusFail, "the output has no field " + p.JSON.Field
		}
		for _, s := range p.JSON.Pass {
			if s == v {
				return StatusPass, p.JSON.Field + " is " + v
			}
		}
		for _, s := range p.JSON.Warn {
			if s == v {
				return StatusWarn, p.JSON.Field + " is " + v
			}
		}
		return StatusFail, p.JSON.Field + " is " + v
	default:
		matched := false
		for line := range bytes.SplitSeq(append(append(bytes.Clone(out), '\n'), errOut...), []byte("\n")) {
			if re.Match(bytes.TrimRight(line, "\r")) {
				matched = true
				break
			}
		}
		if matched {
			return p.Match, "the output matches " + p.Regex
		}
		return p.NoMatch, fmt.Sprintf("the output does not match %s (exit %d)", p.Regex, exit)
	}
}

// field reads a dotted path of a JSON document as text.
func field(doc any, path string) (string, bool) {
	cur := doc
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case nil:
		return "null", true
	default:
		b, _ := json.Marshal(v)
		return string(b), true
	}
}

// limited keeps the first maxOutput bytes written to it.
type limited struct{ bytes.Buffer }

func (l *limited) Write(p []byte) (int, error) {
	if room := maxOutput - l.Len(); room > 0 {
		l.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
