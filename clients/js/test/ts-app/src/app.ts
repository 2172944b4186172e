// Uses every entry of the package with the event types of `sse-sidecar types`: must compile.
import { createSseClient, recordPollIntervalHint, type SseClient, type SsePresence } from '@sse-sidecar/client';
import { connectReactQuery } from '@sse-sidecar/client/react-query';
import { usePresence, useSseEvent, useSseEvents, useSseState } from '@sse-sidecar/client/react';
import type { CardUpdated, MessagePosted, SseEvent, SseEventMap } from './sse-events';

export const sse: SseClient = createSseClient({ topics: ['board:42'], shareAcrossTabs: false });

const queryClient = {
  invalidateQueries: (filters?: { queryKey?: ReadonlyArray<unknown> }) => Promise.resolve(filters),
};
export const rq = connectReactQuery(sse, queryClient, { skipOwnEchoes: true });
export const cardsInterval = rq.refetchInterval('cards', 3000, 'board:42');

/** A handler over the whole registry: narrowed by `type`, `data` typed by the schema. */
export function describe(event: SseEvent): string {
  switch (event.type) {
    case 'card.updated':
      return `card ${event.data.id} on ${event.data.board_id} is now ${event.data.title}`;
    case 'message.posted':
      return `${event.data.conversation_id}: ${event.data.text}`;
    default:
      return `${event.type} in ${event.family}`;
  }
}

sse.onEvent((raw) => {
  const event = raw as SseEvent;
  console.log(describe(event));
});

/** A React component body (no JSX needed): the hooks with the generated types. */
export function useBoard(onTitle: (title: string) => void): string {
  const { state, info } = useSseState(sse);
  useSseEvent<CardUpdated>(sse, 'card.updated', (event) => onTitle(event.data.title));
  const posted = useSseEvents<MessagePosted>(sse, 'message.posted', { max: 20 });
  const texts: string[] = posted.map((e) => e.data.text);
  const byName: SseEventMap['card.updated']['data'] = { id: '7', board_id: '42', title: 'x' };
  const hint: number | null = recordPollIntervalHint(null);
  return `${state} ${info.reason ?? ''} ${texts.join()} ${byName.title} ${hint}`;
}

/** Presence: the hook's value is the client's `SsePresence | null`. */
export function useWhoIsHere(): string {
  const here: SsePresence | null = usePresence(sse, 'board:42');
  if (!here) return 'unknown';
  const names = here.members.map((m) => `${m.id} (${m.connections})`);
  return `${names.join(', ')}${here.partial ? ` and ${here.count - here.members.length} more` : ''}, ${here.anonymous} anonymous`;
}

sse.onPresence('board:42', (presence, change) => {
  if (presence && !change.snapshot) console.log(presence.count, change.joined.map((m) => m.fields), change.left, change.updated);
});
export const presentCount: Promise<number> = sse.fetchPresence('board:42').then((p) => p.count);
