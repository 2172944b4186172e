// Reads a field that card.updated's schema does not have: must NOT compile.
import { createSseClient } from '@sse-sidecar/client';
import { useSseEvent } from '@sse-sidecar/client/react';
import type { CardUpdated } from './sse-events';

const sse = createSseClient({ topics: ['board:42'] });

export function useCardTitles(onTitle: (title: string) => void): void {
  useSseEvent<CardUpdated>(sse, 'card.updated', (event) => onTitle(event.data.headline));
}
