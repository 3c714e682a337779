/*
 * A field-by-field mirror of the Linux driver's vmxnet3_defs.h / upt1_defs.h structs that cross
 * the guest/device boundary (same field order and widths; bitfield words kept as u32). Compiled
 * by clang with natural alignment, it checks the hand-written offsets in NPARingFormats.
 * Test-only: production code reads guest memory through offsets, never through these structs.
 */
#ifndef VMXNET3_MIRROR_H
#define VMXNET3_MIRROR_H
#include <stdint.h>

typedef struct { uint32_t version; uint32_t gos; uint32_t vmxnet3RevSpt; uint32_t uptVerSpt; } M_DriverInfo;
typedef struct {
    M_DriverInfo driverInfo; uint64_t uptFeatures; uint64_t ddPA; uint64_t queueDescPA;
    uint32_t ddLen; uint32_t queueDescLen; uint32_t mtu; uint16_t maxNumRxSG;
    uint8_t numTxQueues; uint8_t numRxQueues; uint32_t reserved[4];
} M_MiscConf;
typedef struct { uint8_t autoMask; uint8_t numIntrs; uint8_t eventIntrIdx; uint8_t modLevels[25]; uint32_t intrCtrl; uint32_t reserved[2]; } M_IntrConf;
typedef struct { uint32_t rxMode; uint16_t mfTableLen; uint16_t pad1; uint64_t mfTablePA; uint32_t vfTable[128]; } M_RxFilterConf;
typedef struct { uint32_t confVer; uint32_t confLen; uint64_t confPA; } M_VariableLenConfDesc;
typedef struct {
    M_MiscConf misc; M_IntrConf intrConf; M_RxFilterConf rxFilterConf;
    M_VariableLenConfDesc rssConfDesc; M_VariableLenConfDesc pmConfDesc; M_VariableLenConfDesc pluginConfDesc;
} M_DSDevRead;
typedef struct { uint32_t magic; uint32_t pad; M_DSDevRead devRead; uint32_t ecr; uint32_t reserved; uint32_t cu[4]; } M_DriverShared;

typedef struct { uint32_t txNumDeferred; uint32_t txThreshold; uint64_t reserved; } M_TxQueueCtrl;
typedef struct {
    uint64_t txRingBasePA; uint64_t dataRingBasePA; uint64_t compRingBasePA; uint64_t ddPA; uint64_t reserved;
    uint32_t txRingSize; uint32_t dataRingSize; uint32_t compRingSize; uint32_t ddLen;
    uint8_t intrIdx; uint8_t pad1; uint16_t txDataRingDescSize; uint8_t pad2[4];
} M_TxQueueConf;
typedef struct { uint8_t stopped; uint8_t pad[3]; uint32_t error; } M_QueueStatus;
typedef struct { uint64_t counters[10]; } M_Stats;
typedef struct { M_TxQueueCtrl ctrl; M_TxQueueConf conf; M_QueueStatus status; M_Stats stats; uint8_t pad[88]; } M_TxQueueDesc;

typedef struct { uint8_t updateRxProd; uint8_t pad[7]; uint64_t reserved; } M_RxQueueCtrl;
typedef struct {
    uint64_t rxRingBasePA[2]; uint64_t compRingBasePA; uint64_t ddPA; uint64_t rxDataRingBasePA;
    uint32_t rxRingSize[2]; uint32_t compRingSize; uint32_t ddLen;
    uint8_t intrIdx; uint8_t pad1; uint16_t rxDataRingDescSize; uint8_t pad2[4];
} M_RxQueueConf;
typedef struct { M_RxQueueCtrl ctrl; M_RxQueueConf conf; M_QueueStatus status; M_Stats stats; uint8_t pad[88]; } M_RxQueueDesc;

_Static_assert(sizeof(M_DriverShared) == 720, "DriverShared v1 is 720 bytes");
_Static_assert(sizeof(M_TxQueueDesc) == 256, "TxQueueDesc is 256 bytes");
_Static_assert(sizeof(M_RxQueueDesc) == 256, "RxQueueDesc is 256 bytes");
#endif
