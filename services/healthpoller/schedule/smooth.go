package schedule

// smoothing holds one target's threshold state (see the package doc).
type smoothing struct {
	reported uint8  // a status code; 0 until the first result
	last     uint8  // last observed status code
	same     uint16 // consecutive results equal to last
	healthy  uint16 // consecutive healthy results
	failing  uint16 // consecutive results that were not healthy
}

const (
	codeNone uint8 = iota
	codeHealthy
	codeDegraded
	codeUnhealthy
	codeUnknown
)

var statusNames = [...]string{codeNone: StatusUnknown, codeHealthy: StatusHealthy, codeDegraded: StatusDegraded,
	codeUnhealthy: StatusUnhealthy, codeUnknown: StatusUnknown}

func code(status string) uint8 {
	switch status {
	case StatusHealthy:
		return codeHealthy
	case StatusDegraded:
		return codeDegraded
	case StatusUnhealthy:
		return codeUnhealthy
	default:
		return codeUnknown
	}
}

func inc(n uint16) uint16 {
	if n == ^uint16(0) {
		return n
	}
	return n + 1
}

// observe takes one observed status and returns the status to report.
func (m *smoothing) observe(status string, th Thresholds) string {
	c := code(status)
	if c == m.last {
		m.same = inc(m.same)
	} else {
		m.last, m.same = c, 1
	}
	if c == codeHealthy {
		m.healthy, m.failing = inc(m.healthy), 0
	} else {
		m.healthy, m.failing = 0, inc(m.failing)
	}
	switch {
	case m.reported == codeNone:
		m.reported = c
	case c == codeHealthy:
		if m.reported != codeHealthy && int(m.healthy) >= th.Success {
			m.reported = c
		}
	case m.reported == codeHealthy:
		if int(m.failing) >= th.Failure {
			m.reported = c
		}
	case c != m.reported && int(m.same) >= th.Failure:
		m.reported = c
	}
	return statusNames[m.reported]
}
