package eventstore

import (
	"sync"

	"github.com/google/uuid"
)

// resends remembers the first event IDs of appends whose outcome the store
// could not learn (ErrUnknownOutcome), so that when the caller sends the
// same events again the append is flagged as a re-send: the script then
// looks for the original in the aggregate whatever its expected version
// (I4 for Any and StreamExists). It holds the last resendMemory such IDs;
// an ID is forgotten once an append carrying it succeeds.
type resends struct {
	mu   sync.Mutex
	ids  map[uuid.UUID]struct{}
	ring []uuid.UUID
	next int
}

const resendMemory = 4096

func (r *resends) has(id uuid.UUID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[id]
	return ok
}

func (r *resends) add(id uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = make(map[uuid.UUID]struct{}, resendMemory)
		r.ring = make([]uuid.UUID, resendMemory)
	}
	if _, ok := r.ids[id]; ok {
		return
	}
	delete(r.ids, r.ring[r.next])
	r.ring[r.next] = id
	r.ids[id] = struct{}{}
	r.next = (r.next + 1) % resendMemory
}

func (r *resends) remove(id uuid.UUID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.ids, id)
}
