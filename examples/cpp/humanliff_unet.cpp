// Loads the whole-graph UNet of a HumanLiff artifacts folder (`humanliff export --unet-layout whole`)
// as an AOTInductor package (unet.pt2, AOTIModelPackageLoader) and as TorchScript (unet.ts,
// torch::jit::load), runs one denoising call on fixed inputs and prints each output's checksum.
// Inputs (batch 1): x[c, i, j] = sin(0.01 k), x_cond = cos(0.01 k) with k the flat index, timestep 500,
// layer 1; the checksum is the sum of eps. tests/test_cpp_example.py compares it with Python.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s ARTIFACTS_DIR RESOLUTION [cpu|cuda]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path folder(argv[1]);
  const int64_t resolution = std::stoll(argv[2]);
  const torch::Device device(argc > 3 ? argv[3] : "cpu");
  const int64_t channels = 27;
  auto flat = torch::arange(channels * resolution * resolution, torch::kFloat32) * 0.01;
  auto x = torch::sin(flat).reshape({1, channels, resolution, resolution}).to(device);
  auto x_cond = torch::cos(flat).reshape({1, channels, resolution, resolution}).to(device);
  auto t = torch::full({1}, 500, torch::kInt64).to(device);
  auto y = torch::full({1}, 1, torch::kInt64).to(device);
  int found = 0;
  if (std::filesystem::exists(folder / "unet.pt2")) {
    const c10::DeviceIndex index = device.is_cuda() ? device.index() < 0 ? 0 : device.index() : -1;
    torch::inductor::AOTIModelPackageLoader loader((folder / "unet.pt2").string(), "model", true, 1, index);
    auto eps = loader.run({x, t, x_cond, y})[0];
    std::printf("aoti %.6f\n", eps.sum().item<double>());
    ++found;
  }
  if (std::filesystem::exists(folder / "unet.ts")) {
    torch::NoGradGuard no_grad;
    auto module = torch::jit::load((folder / "unet.ts").string(), device);
    auto eps = module.forward({x, t, x_cond, y}).toTensor();
    std::printf("torchscript %.6f\n", eps.sum().item<double>());
    ++found;
  }
  if (!found) {
    std::fprintf(stderr, "error: %s: no unet.pt2 or unet.ts (export with --unet-layout whole)\n", argv[1]);
    return 1;
  }
  return 0;
}
