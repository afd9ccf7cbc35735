package connectors

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		max  int
		cut  bool
	}{
		{"fits", "hello", 5, false},
		{"ascii", strings.Repeat("a", 70000), MaxCommentBody, true},
		{"multibyte", strings.Repeat("ä", 200), 140, true},
		{"tiny max", strings.Repeat("x", 50), 10, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, cut := Cut(tc.in, tc.max)
			if cut != tc.cut {
				t.Fatalf("cut = %v, want %v", cut, tc.cut)
			}
			if n := utf8.RuneCountInString(out); n > tc.max {
				t.Fatalf("%d characters, max %d", n, tc.max)
			}
			if !utf8.ValidString(out) {
				t.Fatal("cut inside a rune")
			}
			if tc.cut && tc.max > 100 && !strings.Contains(out, "cut by inthub") {
				t.Fatalf("no visible note: %q", out[len(out)-80:])
			}
		})
	}
	if out, cut := CutPlain(strings.Repeat("é", 141), 140); !cut || utf8.RuneCountInString(out) != 140 || !strings.HasSuffix(out, "…") {
		t.Fatalf("CutPlain: %v %d", cut, utf8.RuneCountInString(out))
	}
}

func TestCommentMarker(t *testing.T) {
	m := CommentMarker("scan --> <b>")
	if strings.Count(m, "-->") != 1 {
		t.Fatalf("key escapes the HTML comment: %s", m)
	}
	if !HasMarker("body\n"+m, "scan --> <b>") || HasMarker("body\n"+m, "scan") {
		t.Fatal("HasMarker")
	}
}
