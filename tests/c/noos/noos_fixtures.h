/* noos_fixtures.h - the no-OS test's data (tools/make_edge_fixtures.py):
 * a torch.nn.GRU(5, 12) + nn.Linear(12, 3) emitted as C by grulite in each
 * weight dtype, an input of 2 sequences x 12 steps, torch's outputs and
 * the host grulite's. */
#ifndef GRULITE_NOOS_FIXTURES_H
#define GRULITE_NOOS_FIXTURES_H

#include <stddef.h>

#define EDGE_B 2
#define EDGE_T 12
#define EDGE_I 5
#define EDGE_H 12
#define EDGE_O 3

extern const unsigned char edge_f32[], edge_f16[], edge_i8[];
extern const size_t edge_f32_size, edge_f16_size, edge_i8_size;

extern const float edge_x[EDGE_B * EDGE_T * EDGE_I];
extern const float edge_torch_y[EDGE_B * EDGE_T * EDGE_H], edge_torch_head[EDGE_B * EDGE_T * EDGE_O];
extern const float edge_f32_y[EDGE_B * EDGE_T * EDGE_H], edge_f32_head[EDGE_B * EDGE_T * EDGE_O];
extern const float edge_f16_y[EDGE_B * EDGE_T * EDGE_H], edge_f16_head[EDGE_B * EDGE_T * EDGE_O];
extern const float edge_i8_y[EDGE_B * EDGE_T * EDGE_H], edge_i8_head[EDGE_B * EDGE_T * EDGE_O];

#endif
