package projection

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/redis/rueidis"

	"github.com/redsource/redsource/eventstore"
)

// checkpointRef is what a checkpoint remembers of the log: the position of
// the last entry applied and its event UUID (nil when unknown: a held or
// missing entry).
type checkpointRef struct {
	category  string
	partition int
	pos       eventstore.Position
	eventID   *uuid.UUID
}

// regressions checks each checkpoint against its partition log, all in one
// pipeline: the entry at the checkpoint must still be there and be the
// same event. It returns, per checkpoint, why not as an error matching
// ErrLogRegressed, or nil. A checkpoint at the start of the log remembers
// nothing and always holds.
func regressions(ctx context.Context, store *eventstore.Store, cps []checkpointRef) ([]error, error) {
	c := store.Client()
	out := make([]error, len(cps))
	var cmds rueidis.Commands
	var idx []int
	for i, cp := range cps {
		if cp.pos.IsZero() {
			continue
		}
		key := store.LogKey(cp.category, cp.partition)
		cmds = append(cmds, c.B().Xrange().Key(key).Start(cp.pos.String()).End(cp.pos.String()).Build(),
			c.B().Xrevrange().Key(key).End("+").Start("-").Count(1).Build())
		idx = append(idx, i)
	}
	if len(cmds) == 0 {
		return out, nil
	}
	res := c.DoMulti(ctx, cmds...)
	for j, i := range idx {
		cp := cps[i]
		at, err := res[2*j].ToArray()
		if err != nil {
			return nil, fmt.Errorf("projection: check the log of %s partition %d: %w", cp.category, cp.partition, eventstore.Classify(err))
		}
		if len(at) == 0 {
			last := "none: the log is empty"
			if tail, err := res[2*j+1].ToArray(); err == nil && len(tail) == 1 {
				if es, err := decodeEntries(cp.category, cp.partition, tail); err == nil {
					last = es[0].id
				}
			}
			out[i] = fmt.Errorf("%w: %s partition %d: the entry at checkpoint %s is gone (last entry in the log: %s)",
				ErrLogRegressed, cp.category, cp.partition, cp.pos, last)
			continue
		}
		es, err := decodeEntries(cp.category, cp.partition, at)
		if err != nil {
			return nil, err
		}
		if cp.eventID != nil && es[0].decodeErr == nil && es[0].ev.ID != *cp.eventID {
			out[i] = fmt.Errorf("%w: %s partition %d: the entry at checkpoint %s is event %s, but the checkpoint recorded event %s",
				ErrLogRegressed, cp.category, cp.partition, cp.pos, es[0].ev.ID, *cp.eventID)
		}
	}
	return out, nil
}
