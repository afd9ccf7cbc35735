package bus

import (
	"fmt"
	"runtime/debug"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Recover turns a panic in a handler into an error. It is left unclassified:
// a panic may come from a passing condition, so it is retried and, if it
// keeps happening, dead-lettered with its stack.
func Recover(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (out []*message.Message, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic in handler: %v\n%s", r, debug.Stack())
			}
		}()
		return h(msg)
	}
}
