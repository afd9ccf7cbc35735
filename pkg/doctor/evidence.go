package doctor

import (
	"bytes"
	"encoding/json"
	"sync"
	"time"
)

// Evidence is a run's JSONL log: a header line naming the run and the
// command that started it (doctor_command), one line per probe (a dial, a
// handshake, a provider call, a pack command), and a summary line. It is
// what an auditor reads to see what the doctor did, so it records what
// was asked of whom and what came back, never a credential or a body.
type Evidence struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	run   string
	integ string
	now   func() time.Time
	lines int
}

// evidenceLine is one line of the log.
type evidenceLine struct {
	Time          time.Time `json:"time"`
	RunID         string    `json:"runId"`
	IntegrationID string    `json:"integrationId,omitempty"`
	// DoctorCommand is on the header line only: what the operator ran.
	DoctorCommand string `json:"doctor_command,omitempty"`
	Check         string `json:"check,omitempty"`
	Probe         string `json:"probe"`
	// Target is scheme://host:port, or a provider operation.
	Target     string   `json:"target,omitempty"`
	Argv       []string `json:"argv,omitempty"`
	Status     string   `json:"status,omitempty"`
	DurationMs int64    `json:"durationMs"`
	Message    string   `json:"message,omitempty"`
	// ExitCode, OutputBytes and OutputSHA256 describe a pack command's
	// result without its text (which may hold anything).
	ExitCode     *int   `json:"exitCode,omitempty"`
	OutputBytes  int    `json:"outputBytes,omitempty"`
	OutputSHA256 string `json:"outputSha256,omitempty"`
}

func newEvidence(runID, integrationID, command string, now func() time.Time) *Evidence {
	e := &Evidence{run: runID, integ: integrationID, now: now}
	e.add(evidenceLine{Probe: "start", DoctorCommand: command})
	return e
}

func (e *Evidence) add(l evidenceLine) {
	e.mu.Lock()
	defer e.mu.Unlock()
	l.Time = e.now().UTC()
	l.RunID = e.run
	l.IntegrationID = e.integ
	b, err := json.Marshal(l)
	if err != nil {
		return // every field marshals
	}
	e.buf.Write(b)
	e.buf.WriteByte('\n')
	e.lines++
}

// Bytes returns the log: JSON lines, each ending in a newline.
func (e *Evidence) Bytes() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bytes.Clone(e.buf.Bytes())
}

// Lines is how many lines the log has.
func (e *Evidence) Lines() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lines
}
